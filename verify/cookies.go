package verify

import (
	"bytes"
	"crypto/sha1" // names cookies as Clerk's frontend names them; nothing rests on its strength
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// The cookies of Clerk's frontend that VerifyRequest reads: SessionCookie
// keeps the session token; ClientUATCookie records when the browser's
// client last changed (signed in, signed out, switched organization), in
// Unix seconds, 0 once it signed out; DevBrowserCookie names the browser to
// a development instance. A session token read from SessionCookie counts
// only with the ClientUATCookie of a signed-in browser that has not changed
// since the token was minted. Clerk's frontend writes each twice: under
// these names, and under these names suffixed for its app (CookieNames),
// so that the apps of several Clerk instances on one domain (two apps on
// localhost) each find their own.
const (
	SessionCookie    = "__session"
	ClientUATCookie  = "__client_uat"
	DevBrowserCookie = "__clerk_db_jwt"
)

// CookieNames name one family of the cookies a browser's session is read
// from: the plain names, or those suffixed for one app.
type CookieNames struct {
	Session, ClientUAT string
	// DevBrowser is the cookie without which the session of a development
	// instance's browser does not count; "" for a production instance.
	DevBrowser string
}

// browserCookies reads a browser's session from its cookies as Clerk's SDK
// reads it for the app of one publishable key, on the app's primary domain
// (the SDK's satellite options have no counterpart here).
type browserCookies struct {
	plain, suffixed CookieNames
	frontendAPI     string // the host its session tokens' "iss" names
	development     bool
}

func newBrowserCookies(publishableKey string, key backend.PublishableKey) *browserCookies {
	suffix := "_" + cookieSuffix(publishableKey)
	b := &browserCookies{
		plain:       CookieNames{Session: SessionCookie, ClientUAT: ClientUATCookie},
		suffixed:    CookieNames{Session: SessionCookie + suffix, ClientUAT: ClientUATCookie + suffix},
		frontendAPI: key.FrontendAPI,
		development: key.Development,
	}
	if key.Development {
		b.plain.DevBrowser, b.suffixed.DevBrowser = DevBrowserCookie, DevBrowserCookie+suffix
	}
	return b
}

// cookieSuffix is what Clerk's frontend appends to its cookies' names for
// the app of a publishable key: the first 8 characters of the base64url
// SHA-1 of the key, as written (its prefix and any padding included).
func cookieSuffix(publishableKey string) string {
	sum := sha1.Sum([]byte(publishableKey))
	return base64.URLEncoding.EncodeToString(sum[:])[:8]
}

// browserSession is the session a browser's cookies hold: its token, and
// the values of the __client_uat cookie of the same family, as sent.
type browserSession struct {
	token     string
	names     CookieNames
	clientUAT []string
}

// session finds the session a browser's cookies hold, as Clerk's SDK finds
// it: in the family usesSuffixed chooses, the first value of each name, an
// empty one counting as none. A request with no session cookie of this
// app has ReasonMissing; on a development instance, one without its
// browser's cookie, or whose URL says the browser is syncing it (a
// __clerk_db_jwt parameter), ReasonSessionOutdated, as the SDK signs both
// out. Stricter than the SDK: a family's __session sent twice is refused
// (ReasonInvalid, and so is its __client_uat, in checkSignedIn), where the
// SDK takes the first; Clerk's frontend writes each once, so another
// writer (a sibling subdomain's cookie) sent the other.
func (b *browserCookies) session(r *http.Request, now time.Time) (*browserSession, error) {
	jar := b.read(r.Header)
	suffixed, err := b.usesSuffixed(jar, now)
	if err != nil {
		return nil, err
	}
	names := b.plain
	if suffixed {
		names = b.suffixed
	}
	tokens := jar[names.Session]
	switch {
	case len(tokens) > 1:
		return nil, invalid("", "more than one "+names.Session+" cookie")
	case len(tokens) == 0 || tokens[0] == "":
		return nil, &Error{Reason: ReasonMissing, Description: "no bearer token, and no session cookie of this app"}
	case names.DevBrowser != "" && (jar.first(names.DevBrowser) == "" || r.URL.Query().Has(DevBrowserCookie)):
		return nil, outdated("the browser of a development instance counts only with its " + names.DevBrowser +
			" cookie, and not while it syncs it")
	}
	return &browserSession{token: tokens[0], names: names, clientUAT: jar[names.ClientUAT]}, nil
}

// cookieJar holds the values of the cookies a browserCookies reads, by
// name, in the order they were sent.
type cookieJar map[string][]string

// first is the value of a cookie Clerk's SDK reads: the first of its name,
// "" when there is none (an empty one counts as none).
func (j cookieJar) first(name string) string {
	if values := j[name]; len(values) > 0 {
		return values[0]
	}
	return ""
}

// read parses a request's Cookie headers as Clerk's SDK does (the cookie
// package it bundles), joined as Node's server joins them: pairs split at
// ";", each at its first "=", spaces and tabs trimmed around name and
// value, a pair without "=" skipped. Values are kept as sent, quotes and
// percent signs too: the SDK keeps quotes, and percent-decodes what Clerk's
// frontend never encodes. Only the names b reads are kept.
func (b *browserCookies) read(header http.Header) cookieJar {
	jar := cookieJar{}
	for _, line := range header.Values("Cookie") {
		for pair := range strings.SplitSeq(line, ";") {
			name, value, found := strings.Cut(pair, "=")
			if name = strings.Trim(name, " \t"); found && b.reads(name) {
				jar[name] = append(jar[name], strings.Trim(value, " \t"))
			}
		}
	}
	return jar
}

func (b *browserCookies) reads(name string) bool {
	return name != "" && (name == b.plain.Session || name == b.plain.ClientUAT || name == b.plain.DevBrowser ||
		name == b.suffixed.Session || name == b.suffixed.ClientUAT || name == b.suffixed.DevBrowser)
}

// usesSuffixed is the SDK's choice between the plain and the suffixed
// cookies (usesSuffixedCookies), made from the first value of each: the
// suffixed ones when the plain session is another instance's (its "iss",
// without its schemes, is not this key's Frontend API), and when it is
// absent, or not newer than the suffixed one, unless the suffixed
// __client_uat says the browser signed out of this app. A plain session
// that does not decode, or names no issuer, keeps the plain cookies. The
// tokens are decoded as the SDK decodes them, not verified: whichever is
// chosen is verified in full afterwards. What the SDK fails on (a payload
// that is null, which throws) or would have to coerce (an "iat" or "exp"
// that is not a number) is refused rather than guessed at.
func (b *browserCookies) usesSuffixed(jar cookieJar, now time.Time) (bool, error) {
	suffixedUAT, plainUAT := jar.first(b.suffixed.ClientUAT), jar.first(b.plain.ClientUAT)
	suffixedToken, plainToken := jar.first(b.suffixed.Session), jar.first(b.plain.Session)
	plain := peek(plainToken)
	if plainToken != "" {
		iss, err := plain.claim("iss")
		switch {
		case err != nil:
			return false, err
		case !truthy(iss):
			return false, nil
		case !b.issued(iss):
			return true, nil
		}
	}
	if suffixedUAT == "" && suffixedToken == "" {
		return false, nil
	}
	suffixed := plain // Clerk's frontend writes this app's session under both names
	if suffixedToken != plainToken {
		suffixed = peek(suffixedToken)
	}
	plainIat, err := plain.numberOrZero("iat")
	if err != nil {
		return false, err
	}
	suffixedIat, err := suffixed.numberOrZero("iat")
	if err != nil {
		return false, err
	}
	switch {
	case suffixedUAT != "0" && plainUAT != "0" && plainIat > suffixedIat:
		return false, nil
	case suffixedUAT == "0" && plainUAT != "0":
		return false, nil
	case b.development && suffixedUAT != "0" && plainUAT == "0":
		if expired, err := suffixed.expired(now); expired || err != nil {
			return false, err
		}
	}
	return suffixedUAT != "" || suffixedToken == "", nil
}

// issued reports whether a token's "iss" names this key's Frontend API, as
// the SDK compares them (tokenBelongsToInstance): a string, every
// "http://" and "https://" in it removed (in any case), equal to the host.
func (b *browserCookies) issued(iss json.RawMessage) bool {
	s, ok := jsonString(iss)
	if !ok {
		return false
	}
	var host strings.Builder
	for i := 0; i < len(s); {
		if n := schemeAt(s[i:]); n > 0 {
			i += n
			continue
		}
		host.WriteByte(s[i])
		i++
	}
	return host.String() == b.frontendAPI
}

// schemeAt is the length of the "http://" or "https://" that starts s, in
// any case of ASCII letters, or 0.
func schemeAt(s string) int {
	for _, scheme := range []string{"https://", "http://"} {
		if len(s) >= len(scheme) && asciiFoldEqual(s[:len(scheme)], scheme) {
			return len(scheme)
		}
	}
	return 0
}

// asciiFoldEqual reports whether s is lower, a lower-case ASCII string, in
// any case of ASCII letters (and of no other: no Unicode folding).
func asciiFoldEqual(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// peekedJWT is a token as Clerk's SDK decodes one to choose its cookies
// (decodeJwt), without verifying anything: three segments of base64url,
// padding allowed; header and payload any JSON, a byte order mark before
// it dropped.
type peekedJWT struct {
	decoded bool
	null    bool     // the payload is null, on which the SDK throws
	claims  []member // of a payload that is an object, the last of duplicates
}

func peek(token string) peekedJWT {
	if len(token) > maxTokenLength {
		return peekedJWT{} // refused if it is read, and not worth decoding to choose
	}
	segments := strings.Split(token, ".")
	if len(segments) != 3 {
		return peekedJWT{}
	}
	var texts [3][]byte
	for i, segment := range segments {
		var ok bool
		if texts[i], ok = looseBase64URL(segment); !ok {
			return peekedJWT{}
		}
	}
	header, payload := jsonText(texts[0]), jsonText(texts[1])
	if !json.Valid(header) {
		return peekedJWT{}
	}
	if len(payload) > 0 && payload[0] == '{' {
		claims, ok := lastMembers(payload)
		return peekedJWT{decoded: ok, claims: claims}
	}
	return peekedJWT{decoded: json.Valid(payload), null: string(payload) == "null"}
}

// lastMembers are the members of a JSON object as JSON.parse keeps them:
// the last of duplicate names. The scanner reads them when they are
// distinct and in valid UTF-8, as Clerk writes them; anything else valid
// is decoded the slow way.
func lastMembers(object []byte) ([]member, bool) {
	if members, err := scanObject(object, nil); err == nil {
		return members, true
	}
	var decoded map[string]json.RawMessage
	if json.Unmarshal(object, &decoded) != nil {
		return nil, false
	}
	members := make([]member, 0, len(decoded))
	for name, value := range decoded {
		members = append(members, member{name: []byte(name), value: value})
	}
	return members, true
}

// looseBase64URL decodes base64url as the SDK's loose mode does: "="
// padding at the end ignored, no other character but the alphabet, no
// stray bits.
func looseBase64URL(s string) ([]byte, bool) {
	s = strings.TrimRight(s, "=")
	for i := 0; i < len(s); i++ {
		if !base64URLBytes[s[i]] {
			return nil, false
		}
	}
	data, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return data, err == nil
}

// jsonText is a segment's text as JSON.parse reads it: without a byte
// order mark before it (TextDecoder drops one) and the white space of JSON
// around it.
func jsonText(text []byte) []byte {
	return bytes.Trim(bytes.TrimPrefix(text, []byte("\ufeff")), " \t\r\n")
}

// claim is a payload's claim, nil when it has none; an error when the SDK
// would throw reading it (a null payload).
func (p peekedJWT) claim(name string) (json.RawMessage, error) {
	if p.null {
		return nil, invalid("", "a session cookie's token has a null payload")
	}
	for _, m := range p.claims {
		if string(m.name) == name {
			return m.value, nil
		}
	}
	return nil, nil
}

// numberOrZero is a claim as the SDK takes it to compare tokens
// (payload.iat || 0): 0 for a token that does not decode and for a claim
// absent or falsy, the number it holds; an error for anything else, which
// the SDK would coerce (or a number beyond float64, which it reads as an
// infinity).
func (p peekedJWT) numberOrZero(name string) (float64, error) {
	if !p.decoded {
		return 0, nil
	}
	raw, err := p.claim(name)
	if err != nil || !truthy(raw) {
		return 0, err
	}
	if n, ok := jsonNumber(raw); ok {
		return n, nil
	}
	return 0, invalid("", "a session cookie's token has a "+name+" that is not a number")
}

// expired is the SDK's sessionExpired: "exp" no later than now, in whole
// seconds; false for a token that does not decode or has no "exp".
func (p peekedJWT) expired(now time.Time) (bool, error) {
	if !p.decoded {
		return false, nil
	}
	raw, err := p.claim("exp")
	if err != nil || raw == nil {
		return false, err
	}
	exp, ok := jsonNumber(raw)
	if !ok {
		return false, invalid("", "a session cookie's token has an exp that is not a number")
	}
	return exp <= float64(now.Unix()), nil
}

// truthy is whether JavaScript takes a JSON value as true: anything but
// absent, null, false, 0 and "".
func truthy(raw json.RawMessage) bool {
	switch s := string(raw); {
	case s == "" || s == "null" || s == "false" || s == `""`:
		return false
	case s[0] == '-' || '0' <= s[0] && s[0] <= '9':
		n, _ := jsonNumber(raw)
		return n != 0
	}
	return true
}
