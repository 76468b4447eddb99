package floor

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// TestFloorChecksTheSignatureOnly: a token the key signed passes, whatever
// its claims (an expired one too: the floor reads none); a token whose
// signature does not verify, or no bearer token, is refused with 401.
func TestFloorChecksTheSignatureOnly(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	h := &Handler{Key: clerk.PublicKeyPEM()}
	if err := h.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	caller := clerk.NewMachine("caller")
	valid := clerk.MintM2MJWT(caller, backendtest.JWTOptions{})
	expired := clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: backendtest.TokenOptions{TTL: -time.Hour}})
	dot := strings.LastIndexByte(valid, '.')
	tampered := valid[:dot-2] + "xx" + valid[dot:]
	for _, tc := range []struct {
		name, authorization string
		want                int
	}{
		{"signed", "Bearer " + valid, http.StatusOK},
		{"signed, expired", "Bearer " + expired, http.StatusOK},
		{"tampered", "Bearer " + tampered, http.StatusUnauthorized},
		{"no bearer token", "Basic " + valid, http.StatusUnauthorized},
		{"not a JWT", "Bearer mt_0123", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Authorization", tc.authorization)
			called := false
			next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { called = true; return nil })
			err := h.ServeHTTP(httptest.NewRecorder(), r, next)
			got := http.StatusOK
			if handlerErr, ok := err.(caddyhttp.HandlerError); ok {
				got = handlerErr.StatusCode
			} else if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || called != (tc.want == http.StatusOK) {
				t.Errorf("status %d, next called %v; want %d", got, called, tc.want)
			}
		})
	}
}

func TestParsePublicKeyRefusesWhatIsNoRSAKey(t *testing.T) {
	for _, text := range []string{"", "not PEM", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"} {
		if _, err := ParsePublicKey(text); err == nil {
			t.Errorf("%q was read as a key", text)
		}
	}
}
