package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// Fuzz targets for everything that parses what a client sends. Seeds are
// in testdata/fuzz/<target>; CI runs each target for a few seconds, and
// longer runs are made by hand:
//
//	go test -run '^$' -fuzz '^FuzzClassify$' -fuzztime 10m ./verify/

func FuzzBearerToken(f *testing.F) {
	for _, seed := range []string{"Bearer mt_abc", "bearer a.b.c", "Bearer  x", "Basic dXNlcjpwYXNz", "Bearer", "", "Bearer \x00",
		"Bearer ak_LCWGdaM8mv8K4PC/57IICZQXAeWfCgF30DZaFXHoGn9="} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		token, err := bearerToken([]string{header})
		if err != nil {
			if token != "" {
				t.Fatal("a refusal returned a token")
			}
			return
		}
		if len(header) < 7 || !strings.EqualFold(header[:7], "bearer ") || header[7:] != token {
			t.Fatalf("accepted %q as %q", header, token)
		}
	})
}

// FuzzSessionCookies: whatever Cookie header a browser sends, reading its
// session never panics, and a session read is one of its session cookies'
// values, in the family whose names it says, with that family's
// __client_uat values.
func FuzzSessionCookies(f *testing.F) {
	private, _ := signingKeys(f)
	session := sign(f, private, sessionHeader(), sessionPayload())
	sfx := "_" + cookieSuffix(testPublishableKey)
	for _, seed := range []string{
		"__session=" + session + "; __client_uat=1", "__session" + sfx + "=" + session + "; __client_uat" + sfx + "=1",
		"__session=a.b.c; __session" + sfx + "=" + session + "; __client_uat" + sfx + "=0", "__session=; __session=x",
		` __session = "x" ;;=;__client_uat`, "__session=" + segmentOf("{}") + "." + segmentOf("null") + ".",
	} {
		f.Add(seed)
	}
	key, err := backend.ParsePublishableKey(testPublishableKey)
	require.NoError(f, err)
	b := newBrowserCookies(testPublishableKey, key)
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", header)
		browser, err := b.session(r, testNow)
		if err != nil {
			return
		}
		jar := b.read(r.Header)
		if browser.token == "" || jar.first(browser.names.Session) != browser.token || !strings.Contains(header, browser.token) {
			t.Fatalf("read %q from %q", browser.token, header)
		}
		if browser.names != b.plain && browser.names != b.suffixed || !slices.Equal(jar[browser.names.ClientUAT], browser.clientUAT) {
			t.Fatalf("read %v of %q", browser, header)
		}
	})
}

func FuzzClassify(f *testing.F) {
	private, _ := signingKeys(f)
	for _, seed := range []string{
		"mt_8XOIucKvqHVr5tYP123456789abcdefghij", "oat_x", "ak_x", "mt_", "unknown", "a.b.c", "mt_a.b.c",
		".a.b", "a..b", "a.b.", "a.b.c.d", "a.b", "a.b.c\n", "ey\r\nJ0.ey.sig", "mt_a+b.c.d", "abcdefghi.jklmnopq+.rstuvwxy", "abcdefgh.ijklmnop.qrstuvwx=",
		sign(f, private, m2mHeader(), m2mPayload()),
		sign(f, private, oauthHeader(), oauthPayload()),
		sign(f, private, sessionHeader(), sessionPayload()),
		sign(f, private, `{"alg":"RS256","alg":"none"}`, `{"sub":"mch_1"}`),
	} {
		f.Add(seed)
	}
	jwtForm := regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`) // Clerk's JwtFormatRegExp
	f.Fuzz(func(t *testing.T, token string) {
		if looksLikeJWT(token) != jwtForm.MatchString(token) {
			t.Fatalf("looksLikeJWT(%q) = %v", token, looksLikeJWT(token))
		}
		cred, err := classify(token)
		if err != nil {
			return
		}
		for i := 0; i < len(token); i++ {
			if !b64TokenBytes[token[i]] {
				t.Fatalf("classified a token with byte %q", token[i])
			}
		}
		if (cred.format == JWT) != looksLikeJWT(token) || (cred.format == JWT) != (cred.jwt != nil) || cred.raw != token {
			t.Fatalf("format %s for %q", cred.format, token)
		}
		if cred.format == Opaque && (cred.kind.prefix == "" || !strings.HasPrefix(token, cred.kind.prefix)) {
			t.Fatalf("opaque token without its prefix: %q", token)
		}
		if cred.kind.tokenType == M2MToken && cred.format == JWT && !isMachineSubject(cred.jwt) {
			t.Fatalf("M2M JWT without a machine subject: %q", token)
		}
	})
}

// FuzzScanObject checks the scanner against encoding/json: whatever JSON
// object encoding/json decodes with distinct keys, the scanner must accept
// with the same members, and it must accept nothing else.
func FuzzScanObject(f *testing.F) {
	for _, seed := range []string{`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"s\u0075b":"x","sub":"y"}`, `{"a":{"b":[1,"}"]}}`,
		`[1]`, `{"a":"\ud800"}`, `{"a":1}}`, ` {"a" : true } `, "{\"a\":\"\xff\"}",
		"{" + manyMembers(namesInMapFrom+8) + "}", "{" + manyMembers(namesInMapFrom+8) + `,"k\u0078":2}`,
		`{"n":[-0.5e+10,0,1E-3,-0],"t":[true,false,null],"e":[[],{},[{}]],"s":"\" \\ \/ \b \f \n \r \t \u00e9 é \ud83d\ude00"}`,
		`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":tru}`, `{"a":"\x"}`, "{\"a\":\"\x01\"}", `{"a":[1,]}`, `{"a":{"b"}}`, `{"a":{"b":1,}}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		members, err := scanObject(data, nil)
		decoded, unique := decodeDistinct(data)
		if err != nil {
			if decoded != nil && unique && utf8.Valid(data) {
				t.Fatalf("refused a valid object %q: %v", data, err)
			}
			return
		}
		if decoded == nil || !unique || !utf8.Valid(data) {
			t.Fatalf("accepted %q, which is not a valid object with distinct members", data)
		}
		if len(members) != len(decoded) {
			t.Fatalf("%d members, encoding/json found %d", len(members), len(decoded))
		}
		for _, m := range members {
			want, ok := decoded[string(m.name)]
			if !ok || !jsonEqual(want, m.value) {
				t.Fatalf("member %q = %s, encoding/json says %s", m.name, m.value, want)
			}
		}
	})
}

// decodeDistinct decodes a JSON object's top-level members with
// encoding/json and reports whether their names are distinct.
func decodeDistinct(data []byte) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	members := map[string]json.RawMessage{}
	unique := true
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, false
		}
		name := tok.(string)
		if _, seen := members[name]; seen {
			unique = false
		}
		members[name] = value
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err == nil || !json.Valid(data) {
		return nil, false // something after the object
	}
	return members, unique
}

func jsonEqual(a, b []byte) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && bytes.Equal(x.Bytes(), y.Bytes())
}

// FuzzVerify feeds the whole verifier: without the private key, nothing
// but the seeded valid tokens themselves may ever verify, so any mutation
// that still passes is a forgery.
func FuzzVerify(f *testing.F) {
	private, _ := signingKeys(f)
	valid := map[string]bool{}
	for _, token := range []string{
		sign(f, private, m2mHeader(), with(m2mPayload(), map[string]any{"exp": 4102444800})),
		sign(f, private, oauthHeader(), with(oauthPayload(), map[string]any{"exp": 4102444800})),
		sign(f, private, sessionHeader(), with(sessionPayload(), map[string]any{"exp": 4102444800})),
	} {
		valid[token] = true
		f.Add(token)
	}
	f.Add("mt_0123456789abcdef0123456789abcdef")
	v := newVerifier(f, allTypes(&fakeClerk{err: &backend.Error{Status: 404}}, &staticKey{signingKey{id: testKid, algorithm: "RS256", public: &private.PublicKey}}))
	f.Fuzz(func(t *testing.T, token string) {
		identity, err := v.Verify(context.Background(), token)
		if err == nil && !valid[token] {
			t.Fatalf("a token nobody signed was accepted: %q (%s %s)", token, identity.TokenType, identity.Subject)
		}
		if err != nil && ReasonOf(err) == "" {
			t.Fatalf("a refusal without a reason: %v", err)
		}
	})
}
