package verify

import (
	"net/http"
	"strings"
)

// maxTokenLength is the longest credential that is looked at. Clerk's tokens
// are well under 4 KiB; anything longer is refused before it is parsed.
const maxTokenLength = 16 << 10

// bearerToken extracts the credential from the values of a request's
// Authorization header, strictly: exactly one header, the scheme "Bearer"
// (in any case), one space, and a token made of RFC 6750 b64token
// characters. No header at all is ReasonMissing; anything else that is not
// such a credential is ReasonInvalid.
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
	if err := checkTokenSyntax(token); err != nil {
		return "", err
	}
	return token, nil
}

// SessionCookie is the cookie in which Clerk's frontend keeps the session
// token, and from which VerifyRequest reads one.
const SessionCookie = "__session"

// credentialOf finds the credential of a request: the Authorization header
// (by bearerToken's rules) or, when it is absent and sessions are accepted,
// the __session cookie (fromCookie). A request with neither has
// ReasonMissing; one with several __session cookies is refused rather than
// guessed at.
func credentialOf(r *http.Request, acceptSessions bool) (token string, fromCookie bool, err error) {
	if authorization := r.Header.Values("Authorization"); len(authorization) > 0 || !acceptSessions {
		token, err := bearerToken(authorization)
		return token, false, err
	}
	var values []string
	for _, cookie := range r.CookiesNamed(SessionCookie) {
		if cookie.Value != "" {
			values = append(values, cookie.Value)
		}
	}
	switch len(values) {
	case 0:
		return "", true, &Error{Reason: ReasonMissing, Description: "no bearer token, and no session cookie"}
	case 1:
		return values[0], true, checkTokenSyntax(values[0])
	default:
		return "", true, invalid("", "more than one session cookie")
	}
}

// checkTokenSyntax refuses what cannot be a Clerk credential before anything
// parses it: empty, too long, or holding characters outside b64token
// (spaces, control bytes, non-ASCII).
func checkTokenSyntax(token string) error {
	switch {
	case token == "":
		return invalid("", "the bearer token is empty")
	case len(token) > maxTokenLength:
		return invalid("", "the bearer token is too long")
	}
	for i := 0; i < len(token); i++ {
		if !b64TokenBytes[token[i]] {
			return invalid("", "the bearer token contains characters a token cannot have")
		}
	}
	return nil
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
