// Package oauthcheck holds what the module's OAuth answers to strict
// readings of their RFCs, for the tests: a WWW-Authenticate challenge
// parsed as RFC 9110 §11 (formerly RFC 7235) writes it, and a protected
// resource's metadata checked against RFC 9728 §2.
package oauthcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// Challenge is one challenge of a WWW-Authenticate field.
type Challenge struct {
	Scheme string
	Params map[string]string // by lower-case name, quoted values unquoted
}

// ParseChallenge parses a field value that holds one challenge with
// auth-params:
//
//	challenge  = auth-scheme [ 1*SP #auth-param ]
//	auth-param = token BWS "=" BWS ( token / quoted-string )
//
// It refuses anything else: a value that is neither a token nor a quoted
// string (a URL left unquoted), a parameter given twice (RFC 9110 §11.2),
// stray commas, a token68.
func ParseChallenge(value string) (Challenge, error) {
	p := &parser{s: value}
	c := Challenge{Scheme: p.token(), Params: map[string]string{}}
	if c.Scheme == "" {
		return c, p.fail("no auth-scheme")
	}
	if p.done() {
		return c, nil
	}
	if !p.skip(" ") {
		return c, p.fail("no space after the auth-scheme")
	}
	p.spaces()
	for {
		name := strings.ToLower(p.token())
		if name == "" {
			return c, p.fail("no auth-param name")
		}
		p.spaces()
		if !p.skip("=") {
			return c, p.fail("no = after " + name)
		}
		p.spaces()
		value, err := p.value()
		if err != nil {
			return c, err
		}
		if _, twice := c.Params[name]; twice {
			return c, p.fail(name + " given twice")
		}
		c.Params[name] = value
		p.spaces()
		if p.done() {
			return c, nil
		}
		if !p.skip(",") {
			return c, p.fail("no comma after " + name)
		}
		p.spaces()
	}
}

type parser struct {
	s   string
	pos int
}

func (p *parser) done() bool { return p.pos == len(p.s) }

func (p *parser) fail(why string) error {
	return fmt.Errorf("not an RFC 9110 challenge: %s at byte %d of %q", why, p.pos, p.s)
}

func (p *parser) skip(prefix string) bool {
	if strings.HasPrefix(p.s[p.pos:], prefix) {
		p.pos += len(prefix)
		return true
	}
	return false
}

func (p *parser) spaces() {
	for !p.done() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

// tchar are the characters of a token (RFC 9110 §5.6.2), but letters and
// digits.
const tchar = "!#$%&'*+-.^_`|~"

func (p *parser) token() string {
	start := p.pos
	for !p.done() {
		b := p.s[p.pos]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte(tchar, b) >= 0) {
			break
		}
		p.pos++
	}
	return p.s[start:p.pos]
}

// value reads a token or a quoted-string (RFC 9110 §5.6.4).
func (p *parser) value() (string, error) {
	if !p.skip(`"`) {
		token := p.token()
		if token == "" || !p.done() && p.s[p.pos] != ',' && p.s[p.pos] != ' ' && p.s[p.pos] != '\t' {
			return "", p.fail("a value that is neither a token nor a quoted-string")
		}
		return token, nil
	}
	var b strings.Builder
	for !p.done() {
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\' && !p.done():
			c = p.s[p.pos]
			p.pos++
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", p.fail("a control character in a quoted-string")
		}
		b.WriteByte(c)
	}
	return "", p.fail("an unterminated quoted-string")
}

// metadataMembers are the members RFC 9728 §2 defines, by the JSON type
// of their value.
var metadataMembers = map[string]string{
	"resource": "url", "authorization_servers": "urls", "jwks_uri": "url", "scopes_supported": "strings",
	"bearer_methods_supported": "strings", "resource_signing_alg_values_supported": "strings", "resource_name": "string",
	"resource_documentation": "url", "resource_policy_uri": "url", "resource_tos_uri": "url",
	"tls_client_certificate_bound_access_tokens": "bool", "authorization_details_types_supported": "strings",
	"dpop_signing_alg_values_supported": "strings", "dpop_bound_access_tokens_required": "bool", "signed_metadata": "string",
}

// CheckResourceMetadata checks a protected resource's metadata document
// against RFC 9728 §2: a JSON object with "resource", an absolute URL
// without a fragment; every member one that RFC 9728 defines (the RFC
// lets others be added, but a document meant to hold only its members
// holds none), of the type it says (never null); bearer methods among
// header, body and query. It returns every fault it finds.
func CheckResourceMetadata(document []byte) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(document, &members); err != nil {
		return fmt.Errorf("not a JSON object: %v", err)
	}
	var faults []error
	if _, ok := members["resource"]; !ok {
		faults = append(faults, errors.New(`no "resource", which RFC 9728 §2 requires`))
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		kind, known := metadataMembers[name]
		if !known {
			faults = append(faults, fmt.Errorf("%q is not a member RFC 9728 §2 defines", name))
			continue
		}
		if err := checkMember(kind, members[name]); err != nil {
			faults = append(faults, fmt.Errorf("%q: %v", name, err))
		}
	}
	var methods []string
	if json.Unmarshal(members["bearer_methods_supported"], &methods) == nil {
		for _, m := range methods {
			if !slices.Contains([]string{"header", "body", "query"}, m) {
				faults = append(faults, fmt.Errorf("bearer method %q is none of RFC 6750's", m))
			}
		}
	}
	return errors.Join(faults...)
}

func checkMember(kind string, raw json.RawMessage) error {
	switch kind {
	case "bool":
		var b *bool
		if json.Unmarshal(raw, &b) != nil || b == nil {
			return errors.New("not a boolean")
		}
		return nil
	case "string", "url":
		var s *string
		if json.Unmarshal(raw, &s) != nil || s == nil || *s == "" {
			return errors.New("not a non-empty string")
		}
		if kind == "url" {
			return checkURL(*s)
		}
		return nil
	}
	var list []string
	if json.Unmarshal(raw, &list) != nil || list == nil || slices.Contains(list, "") {
		return errors.New("not an array of non-empty strings")
	}
	if kind == "urls" {
		for _, s := range list {
			if err := checkURL(s); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an absolute URL without a fragment", s)
	}
	return nil
}
