package verify

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxTokenLength is the longest credential that is looked at. Clerk's tokens
// are well under 4 KiB; anything longer is refused before it is parsed.
const maxTokenLength = 16 << 10

// bearerToken extracts the credential from the values of a request's
// Authorization header, strictly: exactly one header, the scheme "Bearer"
// (in any case), one space, and a token. No header at all is
// ReasonMissing; anything else that is not such a credential is
// ReasonInvalid. Its length is checked before the cache is asked
// (checkTokenLength), its characters when it is classified, before
// anything parses it; a credential answered from the cache is the very
// one that passed that check then, so the hot path reads it only once, to
// hash it.
func bearerToken(authorization []string) (string, error) {
	switch len(authorization) {
	case 0:
		return "", &Error{Reason: ReasonMissing, Description: "no bearer token in the Authorization header"}
	case 1:
	default:
		return "", invalid("", "more than one Authorization header")
	}
	scheme, token, found := strings.Cut(authorization[0], " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", invalid("", `the Authorization header must use the "Bearer" scheme`)
	}
	return token, nil
}

// The cookies of Clerk's frontend that VerifyRequest reads: SessionCookie
// keeps the session token; ClientUATCookie records when the browser's
// client last changed (signed in, signed out, switched organization), in
// Unix seconds, 0 once it signed out. A session token read from
// SessionCookie counts only with the ClientUATCookie of a signed-in browser
// that has not changed since the token was minted.
const (
	SessionCookie   = "__session"
	ClientUATCookie = "__client_uat"
)

// credentialOf finds the credential of a request: the Authorization header
// (by bearerToken's rules) or, when it is absent and sessions are accepted,
// the __session cookie (fromCookie), its value taken as sent (quotes around
// it are kept, as Clerk's SDK keeps them, and then refused, by the
// character check as with the header: Clerk's frontend never quotes a
// token). A request with neither has ReasonMissing; one with several
// __session cookies is refused rather than guessed at.
func credentialOf(r *http.Request, acceptSessions bool) (token string, fromCookie bool, err error) {
	if authorization := r.Header.Values("Authorization"); len(authorization) > 0 || !acceptSessions {
		token, err := bearerToken(authorization)
		return token, false, err
	}
	var values []string
	for _, cookie := range r.CookiesNamed(SessionCookie) {
		switch {
		case cookie.Quoted:
			values = append(values, `"`+cookie.Value+`"`)
		case cookie.Value != "":
			values = append(values, cookie.Value)
		}
	}
	switch len(values) {
	case 0:
		return "", true, &Error{Reason: ReasonMissing, Description: "no bearer token, and no session cookie"}
	case 1:
		return values[0], true, nil
	default:
		return "", true, invalid("", "more than one session cookie")
	}
}

// checkSignedIn applies Clerk's rule for a session token that came from the
// __session cookie (a token from the Authorization header is exempt): the
// request must carry the __client_uat cookie of a signed-in browser, one
// whole number of seconds above 0, and the token must not have been issued
// before it, for an older token predates a sign-out or a switch of
// organization and the frontend is about to replace it. It returns nil, or
// an *Error with ReasonSessionOutdated (ReasonInvalid for a malformed
// cookie).
func checkSignedIn(r *http.Request, id *Identity) error {
	var values []string
	for _, cookie := range r.CookiesNamed(ClientUATCookie) {
		values = append(values, cookie.Value)
	}
	switch len(values) {
	case 0:
		return outdated("the __session cookie came without a __client_uat cookie: the browser is not signed in")
	case 1:
	default:
		return invalid(SessionToken, "more than one __client_uat cookie")
	}
	uat, ok := wholeSeconds(values[0])
	switch {
	case !ok:
		return invalid(SessionToken, "the __client_uat cookie is not a whole number of seconds")
	case uat == 0:
		return outdated("the __client_uat cookie is 0: the browser signed out")
	case !id.IssuedAt.IsZero() && id.IssuedAt.Before(time.Unix(uat, 0)):
		return outdated("the session token is older than the __client_uat cookie: the session changed since it was minted")
	}
	return nil
}

func outdated(description string) *Error {
	return &Error{Reason: ReasonSessionOutdated, TokenType: SessionToken, Description: description}
}

// wholeSeconds reads a number of seconds written in decimal digits alone:
// no sign, no space, no fraction.
func wholeSeconds(s string) (int64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// checkTokenLength refuses a credential that is empty or too long to be
// worth hashing: the one check made before the cache is asked.
func checkTokenLength(token string) error {
	switch {
	case token == "":
		return invalid("", "the bearer token is empty")
	case len(token) > maxTokenLength:
		return invalid("", "the bearer token is too long")
	}
	return nil
}

// b64TokenOnly reports whether token holds only the characters of RFC
// 6750's b64token: no spaces, control bytes or non-ASCII.
func b64TokenOnly(token string) bool {
	for i := 0; i < len(token); i++ {
		if !b64TokenBytes[token[i]] {
			return false
		}
	}
	return true
}

// b64TokenBytes are the bytes that may appear in an RFC 6750 b64token:
// letters, digits, "-", ".", "_", "~", "+", "/" and "=". A table, because
// every byte of every token is looked up.
var b64TokenBytes = byteSet(alphanumerics + "-._~+/=")

// base64URLBytes are the bytes of unpadded base64url.
var base64URLBytes = byteSet(alphanumerics + "-_")

const alphanumerics = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func byteSet(chars string) (set [256]bool) {
	for i := 0; i < len(chars); i++ {
		set[chars[i]] = true
	}
	return set
}

// StripCredentials removes every Clerk credential from a request's
// headers, not only one that was verified: the Authorization header and
// every session cookie (__session, and the __session_<suffix> of Clerk's
// newer SDKs). A session cookie left beside a verified machine token would
// reach the upstream as someone's credential that nobody checked. The
// other cookies are left as they were sent: reparsing them would drop
// those Go cannot parse, and merge the headers.
func StripCredentials(header http.Header) {
	header.Del("Authorization")
	var kept []string
	for _, line := range header.Values("Cookie") {
		pairs := slices.DeleteFunc(strings.Split(line, ";"), func(pair string) bool {
			name, _, _ := strings.Cut(pair, "=")
			name = strings.TrimSpace(name)
			return name == SessionCookie || strings.HasPrefix(name, SessionCookie+"_")
		})
		if rest := strings.TrimSpace(strings.Join(pairs, ";")); rest != "" {
			kept = append(kept, rest)
		}
	}
	if len(kept) == 0 {
		header.Del("Cookie")
		return
	}
	header["Cookie"] = kept
}
