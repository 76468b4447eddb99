package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// Two Clerk apps in development on one domain (localhost, whatever the
// ports), each its own instance: this one, of backendtest.PublishableKey,
// and another. Clerk's frontend names each app's cookies with a suffix of
// its publishable key; the suffixes here are the ones Clerk's SDK
// computes (@clerk/shared getCookieSuffix) for these keys.
const (
	thisAppsSuffix    = "gUTWm0om" // of pk_test_Y2xlcmsuZmFrZS5leGFtcGxlLnRlc3Qk
	otherAppsKey      = "pk_test_Y2xlcmsub3RoZXIuZXhhbXBsZS50ZXN0JA"
	otherAppsSuffix   = "AqSrGeSw"
	otherAppsFrontend = "https://clerk.other.example.test"
)

var sessionsCaddyfile = globals("") + `
http://{{GATEWAY}} {
	clerk_m2m {
		secret_key {{SECRET}}
		api_url {{CLERK}}
		accept session_token
		publishable_key ` + backendtest.PublishableKey(true) + `
	}
	reverse_proxy {{UPSTREAM}} {
		header_up X-Clerk-Subject {http.auth.user.id}
		header_up X-Clerk-Session-Id {http.auth.user.session_id}
	}
	handle_errors {
		header X-Clerk-Error {http.auth.clerk_m2m.error}
		respond "refused" {http.error.status_code}
	}
}
`

// TestASecondAppsBrowserReachesTheUpstream: a browser signed in to two
// Clerk apps on one domain sends each app's suffixed cookies, and the
// plain ones of whichever app wrote last, here the other's. Its session
// of this app reaches the upstream through Caddy, read from this app's
// suffixed cookies as Clerk's SDK reads it; the other app's plain session
// is never taken for this app's.
func TestASecondAppsBrowserReachesTheUpstream(t *testing.T) {
	e := start(t, sessionsCaddyfile)
	other := backendtest.New()
	defer other.Close()
	require.NotEqual(t, backendtest.PublishableKey(true), otherAppsKey)

	const user, otherUser = "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", "user_2GIpXOEpVyJw51rkZn9KmnOTHER"
	ours := e.clerk.MintSessionJWT(user, backendtest.SessionOptions{SessionID: "sess_this_app"})
	theirs := other.MintSessionJWT(otherUser, backendtest.SessionOptions{SessionID: "sess_other_app",
		Payload: map[string]any{"iss": otherAppsFrontend}})
	e.secrets = append(e.secrets, ours, theirs)
	signedIn := fmt.Sprint(time.Now().Add(-time.Hour).Unix())
	// What Clerk's frontend of each app writes: its session, its
	// __client_uat and its development browser, plain and suffixed.
	app := func(suffix, session string) []string {
		return []string{"__client_uat" + suffix + "=" + signedIn, "__clerk_db_jwt" + suffix + "=dvb_" + strings.TrimPrefix(suffix, "_"),
			"__session" + suffix + "=" + session}
	}
	otherApp := append(app("", theirs), app("_"+otherAppsSuffix, theirs)...)
	thisApp := app("_"+thisAppsSuffix, ours)
	send := func(cookies []string) (*http.Response, map[string]string) {
		return e.send("/dashboard", func(req *http.Request) {
			req.Header.Set("Cookie", strings.Join(append([]string{"theme=dark"}, cookies...), "; "))
		})
	}

	resp, seen := send(append(otherApp, thisApp...))
	require.Equal(t, http.StatusOK, resp.StatusCode, "this app's session, beside the other app's cookies")
	assert.Equal(t, user, seen["X-Clerk-Subject"])
	assert.Equal(t, "sess_this_app", seen["X-Clerk-Session-Id"])

	resp, seen = send(append(thisApp, otherApp...))
	require.Equal(t, http.StatusOK, resp.StatusCode, "in whatever order the browser sends them")
	assert.Equal(t, "sess_this_app", seen["X-Clerk-Session-Id"])

	resp, _ = send(otherApp)
	requireRefused(t, resp, http.StatusUnauthorized, "token_missing")
}
