package verify

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// TestCookieSuffix: the suffix of each publishable key is the one Clerk's
// SDK computes (@clerk/shared's getCookieSuffix, run on these keys): the
// key is hashed as written, so a padded and an unpadded spelling of one
// key differ.
func TestCookieSuffix(t *testing.T) {
	for key, want := range map[string]string{
		"pk_live_Y2xlcmsuZXhhbXBsZS5jb20k":                 "naoXFJnI",
		"pk_test_Zm9vLWJhci0xMy5jbGVyay5hY2NvdW50cy5kZXYk": "nx2hSE6I",
		"pk_live_Y2xlcmsuZm9vLmNvbSQ=":                     "GEvML0M1",
		"pk_live_Y2xlcmsuZm9vLmNvbSQ":                      "2mNpRQtM",
		testPublishableKey:                                 "MqCvchyS",
	} {
		assert.Equal(t, want, cookieSuffix(key), key)
	}
}

// testCookies reads the cookies of the app of a publishable key.
func testCookies(t *testing.T, publishableKey string) *browserCookies {
	t.Helper()
	key, err := backend.ParsePublishableKey(publishableKey)
	require.NoError(t, err)
	return newBrowserCookies(publishableKey, key)
}

// unsigned is a token with the form of a JWT and payload, which the
// choice of cookies reads without verifying it.
func unsigned(payload any) string {
	data, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	return segmentOf(`{"alg":"RS256"}`) + "." + base64.RawURLEncoding.EncodeToString(data) + ".c2ln"
}

func segmentOf(text string) string { return base64.RawURLEncoding.EncodeToString([]byte(text)) }

// TestSessionCookies: the session a browser's cookies hold is the one
// Clerk's SDK reads, for each case the SDK was run on (the plain and the
// suffixed cookies; the switch on the plain token's "iss"; the first and
// the empty cookie; the iat comparison and the signed-out exceptions; a
// development instance's browser cookie), and what the SDK fails on is
// refused.
func TestSessionCookies(t *testing.T) {
	production, development := testCookies(t, testPublishableKey), testCookies(t, testDevelopmentKey)
	now := testNow.Unix()
	issuedAt := func(iss any, iat any) string {
		return unsigned(map[string]any{"iss": iss, "iat": iat, "sub": "user_1", "exp": now + 60})
	}
	ours, foreign := issuedAt("https://clerk.inspired.puma-74.lcl.dev", now-10), issuedAt("https://clerk.other.example", now-10)
	newer, older := issuedAt("https://clerk.inspired.puma-74.lcl.dev", now-5), issuedAt("https://clerk.inspired.puma-74.lcl.dev", now-50)
	expired := unsigned(map[string]any{"iss": "https://clerk.inspired.puma-74.lcl.dev", "iat": now - 120, "exp": now - 60})
	sfx := "_" + cookieSuffix(testPublishableKey)
	dev := "_" + cookieSuffix(testDevelopmentKey)
	uat := fmt.Sprint(now - 100)
	pair := func(suffix, token, clientUAT string) string {
		return "__session" + suffix + "=" + token + "; __client_uat" + suffix + "=" + clientUAT
	}
	for name, tc := range map[string]struct {
		cookies  *browserCookies
		header   []string
		url      string
		want     string // the token read
		wantUAT  []string
		suffixed bool
		reason   Reason
	}{
		"plain":                                   {production, []string{pair("", ours, uat)}, "", ours, []string{uat}, false, ""},
		"suffixed":                                {production, []string{pair(sfx, ours, uat)}, "", ours, []string{uat}, true, ""},
		"another app's plain beside ours":         {production, []string{pair("", foreign, uat) + "; " + pair(sfx, ours, "1")}, "", ours, []string{"1"}, true, ""},
		"another app's plain alone":               {production, []string{pair("", foreign, uat)}, "", "", nil, false, ReasonMissing},
		"suffixed session without its uat":        {production, []string{"__session" + sfx + "=" + ours}, "", "", nil, false, ReasonMissing},
		"suffixed uat alone":                      {production, []string{"__client_uat" + sfx + "=" + uat}, "", "", nil, false, ReasonMissing},
		"another app's suffix":                    {production, []string{pair("_XXXXXXXX", ours, uat)}, "", "", nil, false, ReasonMissing},
		"a session sent twice":                    {production, []string{"__session=" + ours + "; __session=" + foreign}, "", "", nil, false, ReasonInvalid},
		"an empty first session is none":          {production, []string{"__session=; __session=" + ours + "; __client_uat=" + uat}, "", "", nil, false, ReasonInvalid},
		"an empty session alone is none":          {production, []string{"__session=; __client_uat=" + uat}, "", "", nil, false, ReasonMissing},
		"another app's first, ours second":        {production, []string{"__session=" + foreign + "; __session=" + ours + "; __client_uat=" + uat}, "", "", nil, false, ReasonMissing},
		"undecodable plain keeps the plain":       {production, []string{pair("", "garbage", uat) + "; " + pair(sfx, ours, uat)}, "", "garbage", []string{uat}, false, ""},
		"quoted plain keeps the plain":            {production, []string{pair("", `"`+foreign+`"`, uat) + "; " + pair(sfx, ours, uat)}, "", `"` + foreign + `"`, []string{uat}, false, ""},
		"plain without iss keeps the plain":       {production, []string{pair("", issuedAt(nil, now), uat) + "; " + pair(sfx, ours, uat)}, "", issuedAt(nil, now), []string{uat}, false, ""},
		"plain newer than the suffixed":           {production, []string{pair("", newer, uat) + "; " + pair(sfx, older, uat)}, "", newer, []string{uat}, false, ""},
		"plain older than the suffixed":           {production, []string{pair("", older, uat) + "; " + pair(sfx, newer, uat)}, "", newer, []string{uat}, true, ""},
		"plain as old as the suffixed":            {production, []string{pair("", ours, uat) + "; " + pair(sfx, ours, "1")}, "", ours, []string{"1"}, true, ""},
		"suffixed signed out":                     {production, []string{pair("", older, uat) + "; " + pair(sfx, newer, "0")}, "", older, []string{uat}, false, ""},
		"suffixed 00 is not signed out":           {production, []string{pair("", older, uat) + "; " + pair(sfx, newer, "00")}, "", newer, []string{"00"}, true, ""},
		"empty suffixed cookies":                  {production, []string{pair(sfx, "", "") + "; " + pair("", ours, uat)}, "", ours, []string{uat}, false, ""},
		"empty suffixed session, suffixed uat":    {production, []string{pair(sfx, "", uat) + "; " + pair("", ours, uat)}, "", ours, []string{uat}, false, ""},
		"plain null payload":                      {production, []string{pair("", segmentOf("{}")+"."+segmentOf("null")+".c2ln", uat)}, "", "", nil, false, ReasonInvalid},
		"suffixed null payload":                   {production, []string{pair(sfx, segmentOf("{}")+"."+segmentOf("null")+".c2ln", uat)}, "", "", nil, false, ReasonInvalid},
		"an iat the SDK would coerce":             {production, []string{pair("", issuedAt("https://clerk.inspired.puma-74.lcl.dev", "9"), uat) + "; " + pair(sfx, ours, uat)}, "", "", nil, false, ReasonInvalid},
		"a falsy iat is 0":                        {production, []string{pair("", issuedAt("https://clerk.inspired.puma-74.lcl.dev", ""), uat) + "; " + pair(sfx, ours, uat)}, "", ours, []string{uat}, true, ""},
		"spaces and tabs around names and values": {production, []string{"  __session = " + ours + " ;\t__client_uat=" + uat + " "}, "", ours, []string{uat}, false, ""},
		"one pair per Cookie header":              {production, []string{"theme=dark", "__session=" + ours, "__client_uat=" + uat}, "", ours, []string{uat}, false, ""},
		"a comma does not separate":               {production, []string{"__session=" + ours + ", __client_uat=" + uat}, "", ours + ", __client_uat=" + uat, nil, false, ""},
		"names are exact":                         {production, []string{"__Session=" + ours + "; __session%5F=x; __client_uat=" + uat}, "", "", nil, false, ReasonMissing},
		"development: no browser cookie":          {development, []string{pair("", ours, uat)}, "", "", nil, false, ReasonSessionOutdated},
		"development: with its browser cookie":    {development, []string{pair("", ours, uat) + "; __clerk_db_jwt=dvb_1"}, "", ours, []string{uat}, false, ""},
		"development: another family's":           {development, []string{pair(dev, ours, uat) + "; __clerk_db_jwt=dvb_1"}, "", "", nil, false, ReasonSessionOutdated},
		"development: suffixed":                   {development, []string{pair(dev, ours, uat) + "; __clerk_db_jwt" + dev + "=dvb_1"}, "", ours, []string{uat}, true, ""},
		"development: syncing":                    {development, []string{pair("", ours, uat) + "; __clerk_db_jwt=dvb_1"}, "/?__clerk_db_jwt=dvb_2", "", nil, false, ReasonSessionOutdated},
		"development: suffixed expired, plain signed out": {development,
			[]string{pair("", older, "0") + "; " + pair(dev, expired, uat) + "; __clerk_db_jwt=dvb_1"}, "", older, []string{"0"}, false, ""},
		"production: suffixed expired, plain signed out": {production,
			[]string{pair("", older, "0") + "; " + pair(sfx, expired, uat)}, "", expired, []string{uat}, true, ""},
	} {
		t.Run(name, func(t *testing.T) {
			url := tc.url
			if url == "" {
				url = "/"
			}
			r := httptest.NewRequest(http.MethodGet, url, nil)
			r.Header["Cookie"] = tc.header
			browser, err := tc.cookies.session(r, testNow)
			if tc.reason != "" {
				requireReason(t, err, tc.reason)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, browser.token)
			assert.Equal(t, tc.wantUAT, browser.clientUAT)
			family := tc.cookies.plain
			if tc.suffixed {
				family = tc.cookies.suffixed
			}
			assert.Equal(t, family, browser.names)
		})
	}
}

// TestTheIssuerSwitch: a plain session stays read as this app's only when
// its "iss", without any http:// or https:// in it (in any case), is the
// publishable key's Frontend API, exactly: the SDK's comparison.
func TestTheIssuerSwitch(t *testing.T) {
	b := testCookies(t, testPublishableKey)
	for iss, ours := range map[any]bool{
		"https://clerk.inspired.puma-74.lcl.dev":              true,
		"http://clerk.inspired.puma-74.lcl.dev":               true,
		"HTTPS://clerk.inspired.puma-74.lcl.dev":              true,
		"clerk.inspired.puma-74.lcl.dev":                      true,
		"https://clerk.inspired.puma-74.lcl.devhttps://":      true,
		"https://clerk.inspired.puma-74.lcl.dev/":             false,
		"https://clerk.inspired.puma-74.lcl.dev:443":          false,
		"https://CLERK.inspired.puma-74.lcl.dev":              false,
		"httpſ://clerk.inspired.puma-74.lcl.dev":              false, // a long s is no s
		"https://clerk.inspired.puma-74.lcl.dev.evil.example": false,
		7: false,
		"htt" + "ps://clerk.inspired.puma-74.lcl.dev\u0000":      false,
		"https://https://clerk.inspired.puma-74.lcl.dev":         true,
		"https:/" + "/clerk.inspired.puma-74.lcl.dev" + "http:/": false,
	} {
		raw, err := json.Marshal(iss)
		require.NoError(t, err)
		assert.Equal(t, ours, b.issued(raw), "%v", iss)
	}
}

// TestPeek: tokens are decoded as the SDK's decodeJwt decodes them, to
// choose the cookies: loosely (padding, a byte order mark, any JSON), but
// not anything at all.
func TestPeek(t *testing.T) {
	payload := `{"iss":"x","iat":5}`
	for name, tc := range map[string]struct {
		token   string
		decoded bool
	}{
		"a JWT":                 {segmentOf("{}") + "." + segmentOf(payload) + ".c2ln", true},
		"padded":                {segmentOf("{}") + "." + segmentOf(payload) + "==.c2ln", true},
		"a byte order mark":     {segmentOf("{}") + "." + segmentOf("\ufeff"+payload) + ".c2ln", true},
		"white space around":    {segmentOf("{}") + "." + segmentOf(" \n"+payload+"\t") + ".c2ln", true},
		"an array payload":      {segmentOf("{}") + "." + segmentOf("[1]") + ".c2ln", true},
		"a header of null":      {segmentOf("null") + "." + segmentOf(payload) + ".c2ln", true},
		"empty signature":       {segmentOf("{}") + "." + segmentOf(payload) + ".", true},
		"two segments":          {segmentOf("{}") + "." + segmentOf(payload), false},
		"standard alphabet":     {segmentOf("{}") + "." + strings.ReplaceAll(segmentOf(payload), "_", "/") + "/.c2ln", false},
		"a stray bit":           {segmentOf("{}") + "." + segmentOf(payload)[:len(segmentOf(payload))-1] + "z.c2ln", false},
		"a newline":             {segmentOf("{}") + "." + segmentOf(payload) + "\n.c2ln", false},
		"form feed before JSON": {segmentOf("{}") + "." + segmentOf("\f"+payload) + ".c2ln", false},
		"trailing garbage":      {segmentOf("{}") + "." + segmentOf(payload+"x") + ".c2ln", false},
		"a bad signature":       {segmentOf("{}") + "." + segmentOf(payload) + ".!", false},
		"longer than any token": {segmentOf("{}") + "." + segmentOf(payload) + "." + strings.Repeat("A", maxTokenLength), false},
	} {
		p := peek(tc.token)
		assert.Equal(t, tc.decoded, p.decoded, name)
	}
	p := peek(segmentOf("{}") + "." + segmentOf(`{"iat":1,"iat":7}`) + ".c2ln")
	iat, err := p.numberOrZero("iat")
	require.NoError(t, err)
	assert.Equal(t, float64(7), iat, "the last of duplicate members, as JSON.parse")
}

// TestCredential: where the credential of a request is looked for. The
// SDK reads the cookies when the Authorization header holds no credential
// it takes, and so does the module, but for the scheme's case.
func TestCredential(t *testing.T) {
	sessions, machines := allTypes(nil, nil), allTypes(nil, nil)
	machines.Accept = []TokenType{M2MToken}
	withoutKey := allTypes(nil, nil)
	withoutKey.PublishableKey = ""
	for name, tc := range map[string]struct {
		opts          Options
		authorization []string
		cookies       string
		want          string
		fromCookie    bool
		reason        Reason
	}{
		"header":                          {machines, []string{"Bearer mt_a"}, "", "mt_a", false, ""},
		"header wins over the cookie":     {sessions, []string{"Bearer mt_a"}, "__session=a.b.c", "mt_a", false, ""},
		"header in any case":              {sessions, []string{"bearer mt_a"}, "__session=a.b.c", "mt_a", false, ""},
		"cookie when sessions accepted":   {sessions, nil, "__session=a.b.c", "a.b.c", true, ""},
		"cookie ignored otherwise":        {machines, nil, "__session=a.b.c", "", false, ReasonMissing},
		"nothing":                         {sessions, nil, "", "", true, ReasonMissing},
		"other cookies only":              {sessions, nil, "theme=dark", "", true, ReasonMissing},
		"a quoted cookie, quotes kept":    {sessions, nil, `__session="a.b.c"`, `"a.b.c"`, true, ""},
		"another scheme: the cookie":      {sessions, []string{"Basic dXNlcjpwYXNz"}, "__session=a.b.c", "a.b.c", true, ""},
		"an empty header: the cookie":     {sessions, []string{""}, "__session=a.b.c", "a.b.c", true, ""},
		"another scheme, machines only":   {machines, []string{"Basic dXNlcjpwYXNz"}, "__session=a.b.c", "", false, ReasonInvalid},
		"a scheme alone is the header's":  {sessions, []string{"Basic "}, "__session=a.b.c", "", false, ReasonInvalid},
		"no space: the header's":          {sessions, []string{"mt_a"}, "__session=a.b.c", "", false, ReasonInvalid},
		"two headers: refused":            {sessions, []string{"Basic x", "Basic y"}, "__session=a.b.c", "", false, ReasonInvalid},
		"no publishable key: no cookie":   {withoutKey, nil, "__session=a.b.c; __client_uat=1", "", true, ReasonMissing},
		"no publishable key, header read": {withoutKey, []string{"Bearer mt_a"}, "", "mt_a", false, ""},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header["Authorization"] = tc.authorization
			if tc.cookies != "" {
				r.Header.Set("Cookie", tc.cookies)
			}
			token, browser, err := newVerifier(t, tc.opts).credentialOf(r)
			if tc.reason != "" {
				requireReason(t, err, tc.reason)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, token)
			assert.Equal(t, tc.fromCookie, browser != nil)
		})
	}
}

func TestCarriesCredential(t *testing.T) {
	for value, carries := range map[string]bool{
		"Bearer x": true, "bEaReR x": true, "Bearer": true, "Bearer ": true, "Bearer  x": true, "x": true, "Bearer\tx": true,
		"Basic x": false, "Basic x y": false, "Token x": false, "Basic ": true, "Basic  x": true, "": false,
	} {
		assert.Equal(t, carries, carriesCredential([]string{value}), "%q", value)
	}
	assert.False(t, carriesCredential(nil))
	assert.True(t, carriesCredential([]string{"Basic x", "Basic y"}), "several headers are the header's to refuse")
}

// TestBrowserSessionsAsClerksSDKReadsThem: VerifyRequest reads the
// sessions of the table as Clerk's SDK does, verified in full: a
// browser of two Clerk apps on one domain (another instance's plain
// cookies beside this app's suffixed ones) and one with only the suffixed
// ones are signed in; a plain session whose "iss" is not this app's
// Frontend API (a trailing slash, or another instance's signed with this
// instance's key) is not, nor a quoted __client_uat, nor an empty
// __session before the real one. Without a publishable key no cookie is
// read at all.
func TestBrowserSessionsAsClerksSDKReadsThem(t *testing.T) {
	private, other := signingKeys(t)
	opts := allTypes(nil, keysFor(private, "RS256"))
	opts.Accept = []TokenType{SessionToken}
	v := newVerifier(t, opts)
	opts.PublishableKey = ""
	withoutKey := newVerifier(t, opts)
	ours := sign(t, private, sessionHeader(), sessionPayload())
	elsewhere := map[string]any{"iss": "https://clerk.other.example", "sid": "sess_other"}
	anotherApp := sign(t, other, sessionHeader(), with(sessionPayload(), elsewhere))
	slash := sign(t, private, sessionHeader(), with(sessionPayload(), map[string]any{"iss": "https://clerk.inspired.puma-74.lcl.dev/"}))
	sameKeyElsewhere := sign(t, private, sessionHeader(), with(sessionPayload(), elsewhere))
	sfx := "_" + cookieSuffix(testPublishableKey)
	uat := fmt.Sprint(testNow.Unix() - 60)
	for name, tc := range map[string]struct {
		cookies string
		reason  Reason // "" for signed in as ours
	}{
		"two apps on one domain": {"__session=" + anotherApp + "; __client_uat=" + uat + "; __session" + sfx + "=" + ours +
			"; __client_uat" + sfx + "=" + uat, ""},
		"only the suffixed cookies":            {"__session" + sfx + "=" + ours + "; __client_uat" + sfx + "=" + uat, ""},
		"the plain cookies of this app":        {"__session=" + ours + "; __client_uat=" + uat, ""},
		"a plain iss with a trailing slash":    {"__session=" + slash + "; __client_uat=" + uat, ReasonMissing},
		"a plain session of another issuer":    {"__session=" + sameKeyElsewhere + "; __client_uat=" + uat, ReasonMissing},
		"a quoted __client_uat":                {"__session=" + ours + `; __client_uat="` + uat + `"`, ReasonInvalid},
		"an empty __session before this one":   {"__session=; __session=" + ours + "; __client_uat=" + uat, ReasonInvalid},
		"another app's session in our cookies": {"__session" + sfx + "=" + anotherApp + "; __client_uat" + sfx + "=" + uat, ReasonInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Cookie", tc.cookies)
			id, err := v.VerifyRequest(r)
			if tc.reason != "" {
				requireReason(t, err, tc.reason)
			} else {
				require.NoError(t, err)
				assert.Equal(t, "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9", id.SessionID)
			}
			_, err = withoutKey.VerifyRequest(r)
			requireReason(t, err, ReasonMissing) // no cookie is read without a publishable key
		})
	}
}
