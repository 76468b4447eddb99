package clerkm2m

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/verify"
)

// inspectReport is what inspect prints; with --json, as it is. Nothing in
// it holds the credential or a key.
type inspectReport struct {
	// Fingerprint is "sha256:" and the first 8 hex digits of the SHA-256 of
	// the credential.
	Fingerprint string `json:"fingerprint"`
	// What the credential's shape says, as clerk_m2m classifies it.
	TokenType   verify.TokenType `json:"token_type,omitempty"`
	TokenFormat verify.Format    `json:"token_format,omitempty"`
	// NotAClerkCredential says why the shape alone is refused.
	NotAClerkCredential string `json:"not_a_clerk_credential,omitempty"`
	// A JWT's header and claims, as the token says (not verified), and its
	// times (exp, nbf, iat) as dates and in words.
	Header *headerReport          `json:"header,omitempty"`
	Claims json.RawMessage        `json:"claims,omitempty"`
	Times  map[string]*timeReport `json:"times,omitempty"`

	// Verdict is accepted, refused or not_verified.
	Verdict            string       `json:"verdict"`
	NotVerifiedBecause string       `json:"not_verified_because,omitempty"`
	CheckedWith        *checkedWith `json:"checked_with,omitempty"`
	// A refusal: {http.auth.clerk_m2m.error}, the handler's description of
	// it and the cause, the status and the headers it answers with.
	Reason          verify.Reason `json:"reason,omitempty"`
	Description     string        `json:"description,omitempty"`
	Cause           string        `json:"cause,omitempty"`
	Status          int           `json:"status,omitempty"`
	WWWAuthenticate string        `json:"www_authenticate,omitempty"`
	RetryAfter      string        `json:"retry_after,omitempty"`
	// Hint says what the refusal may mean that its reason does not.
	Hint string `json:"hint,omitempty"`
	// An acceptance: every {http.auth.user.*} placeholder, by its name
	// without braces; placeholderOrder is the order they are printed in.
	Placeholders     map[string]string `json:"placeholders,omitempty"`
	placeholderOrder []string

	ExitStatus int `json:"exit_status"`
}

// The verdicts.
const (
	verdictAccepted    = "accepted"
	verdictRefused     = "refused"
	verdictNotVerified = "not_verified"
)

type headerReport struct {
	Alg      string `json:"alg,omitempty"`
	Kid      string `json:"kid,omitempty"`
	Typ      string `json:"typ,omitempty"`
	Cat      string `json:"cat,omitempty"`
	Category string `json:"category"` // cat in words: session, M2M, JWT template, ignore, unknown, absent
}

type timeReport struct {
	Unix     int64  `json:"unix"`
	UTC      string `json:"utc"`
	Relative string `json:"relative"` // "expired 3 minutes ago", "valid for 54 more minutes"
}

// checkedWith is the handler that gave the verdict: what it accepts, how it
// verifies each format, where it asks Clerk, and where it found the
// credential.
type checkedWith struct {
	Accept                   []verify.TokenType `json:"accept"`
	OpaqueTokensVerifiedWith string             `json:"opaque_tokens_verified_with"`
	JWTsVerifiedWith         string             `json:"jwts_verified_with"`
	APIURL                   string             `json:"api_url"`
	CredentialIn             string             `json:"credential_in"` // authorization_header, session_cookie or suffixed_session_cookie
}

// timePhrases say a JWT's times in words, by claim.
var timePhrases = map[string]func(at, now time.Time) string{
	"exp": expiryPhrase,
	"nbf": func(at, now time.Time) string {
		if at.After(now) {
			return "not valid for another " + span(at.Sub(now))
		}
		return "valid since " + span(now.Sub(at)) + " ago"
	},
	"iat": func(at, now time.Time) string {
		if at.After(now) {
			return "issued " + span(at.Sub(now)) + " in the future"
		}
		return "issued " + span(now.Sub(at)) + " ago"
	},
}

// expiryPhrase says an expiry in words: "expired 3 minutes ago", "valid
// for 54 more minutes".
func expiryPhrase(at, now time.Time) string {
	if !at.After(now) {
		return "expired " + span(now.Sub(at)) + " ago"
	}
	n, unit := spanUnits(at.Sub(now))
	return fmt.Sprintf("valid for %d more %s", n, unit)
}

// span says a duration in words: "3 minutes", "1 second".
func span(d time.Duration) string {
	n, unit := spanUnits(d)
	return fmt.Sprintf("%d %s", n, unit)
}

// spanUnits counts d, rounded down, in the largest unit it holds at least
// two of (seconds below two minutes, minutes below two hours, hours below
// two days, days beyond), so that one number says it closely enough.
func spanUnits(d time.Duration) (int64, string) {
	units := []struct {
		size time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}}
	for _, u := range units {
		if d >= 2*u.size {
			return int64(d / u.size), u.name + "s"
		}
	}
	n := int64(d / time.Second)
	if n == 1 {
		return n, "second"
	}
	return n, "seconds"
}

// latestShownDate bounds the times shown as dates: 9999-12-31 23:59:59 UTC,
// in Unix seconds, either way from 1970.
const latestShownDate = 253402300799

// claimTimes reads the times of a JWT's claims that are numbers of seconds
// (any fraction dropped, as the verifier drops it).
func claimTimes(claims json.RawMessage, now time.Time) map[string]*timeReport {
	var values map[string]any
	if decodeNumbers(claims, &values) != nil {
		return nil
	}
	reports := map[string]*timeReport{}
	for name, phrase := range timePhrases {
		number, ok := values[name].(json.Number)
		if !ok {
			continue
		}
		seconds, err := number.Float64()
		if err != nil || seconds > latestShownDate || seconds < -latestShownDate {
			continue
		}
		at := time.Unix(int64(seconds), 0)
		reports[name] = &timeReport{Unix: at.Unix(), UTC: utcDate(at), Relative: phrase(at, now)}
	}
	if len(reports) == 0 {
		return nil
	}
	return reports
}

func utcDate(at time.Time) string { return at.UTC().Format("2006-01-02 15:04:05 UTC") }

// decodeNumbers decodes one JSON value, and nothing after it, keeping
// numbers as they are written.
func decodeNumbers(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more than one JSON value")
	}
	return nil
}

// writeJSON prints the report as one JSON object, in ASCII: nothing a
// credential carries can reach a terminal as a control sequence.
func (r *inspectReport) writeJSON(w io.Writer) {
	data, err := json.Marshal(r)
	if err != nil { // every field marshals: fail loudly rather than print half a report
		panic(err)
	}
	printf(w, "%s\n", asciiJSON(data))
}

// writeText prints the report for a person.
func (r *inspectReport) writeText(w io.Writer) {
	line := func(label, format string, args ...any) {
		printf(w, "%-13s%s\n", label, fmt.Sprintf(format, args...))
	}
	line("credential", "%s (the first 8 hex digits of its SHA-256; the credential itself is never shown)", r.Fingerprint)
	if r.NotAClerkCredential != "" {
		line("type", "none: %s", r.NotAClerkCredential)
	} else {
		line("type", "%s, %s", r.TokenType, r.TokenFormat)
	}
	if h := r.Header; h != nil {
		line("header", "alg %s, typ %s, kid %s, cat %s (%s)", orNone(h.Alg), orNone(h.Typ), orNone(h.Kid), orNone(h.Cat), h.Category)
		r.writeClaims(w)
	}
	if c := r.CheckedWith; c != nil {
		line("checked as", "clerk_m2m accepting %s; opaque tokens verified with %s, JWTs with %s; api_url %s; "+
			"cache off; the credential in the %s", joinTypes(c.Accept), c.OpaqueTokensVerifiedWith, c.JWTsVerifiedWith,
			c.APIURL, strings.ReplaceAll(c.CredentialIn, "_", " "))
	}
	switch r.Verdict {
	case verdictNotVerified:
		line("verdict", "not verified: %s", shown(r.NotVerifiedBecause))
	case verdictAccepted:
		line("verdict", "accepted: the request goes on to the next handler, with these placeholders")
		for _, name := range r.placeholderOrder {
			value := r.Placeholders[name]
			// A claim's placeholder is named after the claim: escaped, as its value is.
			printf(w, "  %-34s %s%s\n", shown("{"+name+"}"), orEmpty(value), expiryNote(name, value))
		}
	default:
		line("verdict", "refused: %s (%s)", r.Reason, shown(r.Description))
		if r.ExitStatus == exitTrouble {
			line("", "no verdict on the credential itself: the handler could not verify it")
		}
		if r.Cause != "" {
			line("cause", "%s", shown(r.Cause))
		}
		line("answer", "%d %s", r.Status, http.StatusText(r.Status))
		if r.WWWAuthenticate != "" {
			line("", "WWW-Authenticate: %s", shown(r.WWWAuthenticate))
		}
		if r.RetryAfter != "" {
			line("", "Retry-After: %s", shown(r.RetryAfter))
		}
		if r.Hint != "" {
			line("hint", "%s", r.Hint)
		}
	}
}

// writeClaims prints a JWT's claims, sorted, with their times as dates and
// in words.
func (r *inspectReport) writeClaims(w io.Writer) {
	var claims map[string]json.RawMessage
	if json.Unmarshal(r.Claims, &claims) != nil {
		return
	}
	printf(w, "%-13s%s\n", "claims", "as the token says them, not verified:")
	for _, name := range slices.Sorted(maps.Keys(claims)) {
		note := ""
		if t := r.Times[name]; t != nil {
			note = "  " + t.UTC + ", " + t.Relative
		}
		var compact bytes.Buffer
		_ = json.Compact(&compact, claims[name]) // valid: it was decoded
		printf(w, "  %-11s%s%s\n", shown(name), asciiJSON(compact.Bytes()), note)
	}
}

// expiryNote gives {http.auth.user.expires_at} as a date and in words.
func expiryNote(name, value string) string {
	if name != identityPlaceholderPrefix+"expires_at" {
		return ""
	}
	seconds, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return ""
	}
	at := time.Unix(seconds, 0)
	return "  " + utcDate(at) + ", " + expiryPhrase(at, time.Now())
}

func joinTypes(types []verify.TokenType) string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = string(t)
	}
	return strings.Join(names, " ")
}

// orNone is a header member as it may be printed, "(none)" when empty.
func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return shown(s)
}

// orEmpty is a placeholder's value as it may be printed, "(empty)" when
// it is.
func orEmpty(s string) string {
	if s == "" {
		return "(empty)"
	}
	return shown(s)
}

// shown is text from a credential or from Clerk as it may be printed: as
// it is when it is printable ASCII, else quoted with every other
// character escaped, so that no control sequence reaches a terminal.
func shown(s string) string {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%+q", s)
		}
	}
	return s
}

// asciiJSON escapes every character of compact JSON text outside
// printable ASCII as \uXXXX (encoding/json leaves DEL and non-ASCII as
// they are); the text means the same.
func asciiJSON(data []byte) string {
	var b strings.Builder
	for _, c := range string(data) {
		switch {
		case c >= 0x20 && c < 0x7f:
			b.WriteRune(c)
		case c > 0xffff:
			c -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(c>>10), 0xdc00+(c&0x3ff))
		default:
			fmt.Fprintf(&b, `\u%04x`, c)
		}
	}
	return b.String()
}
