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
	if !found || scheme != "Bearer" && !strings.EqualFold(scheme, "Bearer") { // as it is nearly always written, first
		return "", invalid("", `the Authorization header must use the "Bearer" scheme`)
	}
	return token, nil
}

// credentialOf finds the credential of a request: the Authorization header
// (by bearerToken's rules) or, where sessions are accepted and that header
// holds nothing Clerk's SDK takes for a credential (carriesCredential), the
// session in the browser's cookies (browserCookies.session), which are read
// only with a publishable key: without one, which app's cookies are which,
// and whether a session is this app's, cannot be told. A request with
// neither has ReasonMissing.
func (v *Verifier) credentialOf(r *http.Request) (string, *browserSession, error) {
	// By the canonical key, as Header.Values would look it up, without
	// canonicalizing it again on every request.
	authorization := r.Header["Authorization"]
	if !slices.Contains(v.accept, SessionToken) || carriesCredential(authorization) {
		token, err := bearerToken(authorization)
		return token, nil, err
	}
	if v.cookies == nil {
		return "", nil, &Error{Reason: ReasonMissing, Description: "no bearer token (session cookies are read only with a publishable key)"}
	}
	browser, err := v.cookies.session(r, v.now())
	if err != nil {
		return "", nil, err
	}
	return browser.token, browser, nil
}

// carriesCredential reports whether Authorization headers hold what Clerk's
// SDK takes for a credential, and so judges a request by: anything but no
// header, an empty one, or "<scheme> <credentials>" of a scheme other than
// Bearer (in any case here, as RFC 7235 has it), such as Basic, which the
// SDK passes over for the cookies. Several headers are judged, and refused,
// by bearerToken.
func carriesCredential(authorization []string) bool {
	if len(authorization) != 1 {
		return len(authorization) > 1
	}
	if authorization[0] == "" {
		return false
	}
	scheme, rest, found := strings.Cut(authorization[0], " ")
	credentials, _, _ := strings.Cut(rest, " ")
	return !found || strings.EqualFold(scheme, "Bearer") || credentials == ""
}

// checkSignedIn applies Clerk's rule for a session token that came from a
// browser's cookies (a token from the Authorization header is exempt): the
// request must carry the __client_uat cookie of the same family, of a
// signed-in browser, one whole number of seconds above 0 (as Clerk's
// frontend writes it), and the token must not have been issued before it,
// for an older token predates a sign-out or a switch of organization and
// the frontend is about to replace it. It returns nil, or an *Error with
// ReasonSessionOutdated (ReasonInvalid for a malformed __client_uat, or
// one sent twice).
func checkSignedIn(browser *browserSession, id *Identity) error {
	name := browser.names.ClientUAT
	switch len(browser.clientUAT) {
	case 0:
		return outdated("the session cookie came without a " + name + " cookie: the browser is not signed in")
	case 1:
	default:
		return invalid(SessionToken, "more than one "+name+" cookie")
	}
	uat, ok := wholeSeconds(browser.clientUAT[0])
	switch {
	case !ok:
		return invalid(SessionToken, "the "+name+" cookie is not a whole number of seconds")
	case uat == 0:
		return outdated("the " + name + " cookie is 0: the browser signed out")
	case !id.IssuedAt.IsZero() && id.IssuedAt.Before(time.Unix(uat, 0)):
		return outdated("the session token is older than the " + name + " cookie: the session changed since it was minted")
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
