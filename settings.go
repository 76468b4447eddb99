package clerkm2m

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// settings are a clerk_m2m handler's configuration as it verifies with
// it: its placeholders expanded, the CLERK_* environment variables in
// place of the keys it does not set, translated into verify's options and
// the settings of the Clerk instance it shares. The inspect command reads
// them too.
type settings struct {
	verify   verify.Options // but its Pool and its hooks
	instance instanceSettings
	resource *resourceMetadata // nil unless protected_resource
}

// settings expands the handler's configuration. It reads a jwt_key given
// as a file's path, and nothing else outside the process.
func (h *Handler) expand() (settings, error) {
	repl := caddy.NewReplacer()
	var s settings
	o := &s.verify
	if err := expandFields(repl,
		keyField("secret_key", h.SecretKey, "{env.CLERK_SECRET_KEY}", &o.SecretKey),
		keyField("machine_secret_key", h.MachineSecretKey, "{env.CLERK_MACHINE_SECRET_KEY}", &o.MachineSecretKey),
		keyField("jwt_key", h.JWTKey, "{env.CLERK_JWT_KEY}", &o.JWTKey),
		apiURLField(h.APIURL, &o.APIURL),
		keyField("publishable_key", h.PublishableKey, "{env.CLERK_PUBLISHABLE_KEY}", &o.PublishableKey),
	); err != nil {
		return s, err
	}
	var err error
	if o.JWTKey, err = readJWTKey(o.JWTKey); err != nil {
		return s, fmt.Errorf("jwt_key: %v", err)
	}
	if err := expandLists(repl, o, h); err != nil {
		return s, err
	}
	if h.ProtectedResource != nil {
		if s.resource, err = expandResource(repl, h.ProtectedResource, o); err != nil {
			return s, err
		}
	}
	o.ClockSkew, o.CacheTTL = optionalDuration(h.ClockSkew), optionalDuration(h.CacheTTL)
	s.instance = instanceSettings{APIURL: o.APIURL, Timeout: optionalDuration(h.Timeout), MaxStale: optionalDuration(h.JWKSMaxStale),
		MaxClerkCalls: h.MaxClerkCalls, MaxClerkRate: h.MaxClerkRate, CacheMaxBytes: h.CacheMaxBytes}
	if o.JWTKey == "" { // with jwt_key, no key set is ever fetched
		s.instance.SecretKey, s.instance.PublishableKey = o.SecretKey, o.PublishableKey
	}
	return s, nil
}

// expandLists resolves the accepted types and the lists that say who may
// pass.
func expandLists(repl *caddy.Replacer, o *verify.Options, h *Handler) error {
	var names []string
	var err error
	if len(h.Accept) > 0 { // else verify's default
		if names, err = expandList(repl, "accept", h.Accept); err != nil {
			return err
		}
		if len(names) == 0 {
			return errors.New("accept: no token type given")
		}
		if o.Accept, err = verify.ParseTokenTypes(names); err != nil {
			return fmt.Errorf("accept: %v", err)
		}
	}
	for _, list := range []struct {
		name string
		from []string
		dest *[]string
	}{
		{"require_scopes", h.RequireScopes, &o.RequireScopes},
		{"allowed_subjects", h.AllowedSubjects, &o.AllowedSubjects},
		{"authorized_parties", h.AuthorizedParties, &o.AuthorizedParties},
		{"audience", h.Audience, &o.Audience},
		{"issuer", h.Issuer, &o.Issuer},
	} {
		if *list.dest, err = expandList(repl, list.name, list.from); err != nil {
			return err
		}
	}
	return nil
}

// readJWTKey reads jwt_key: PEM text, or bare base64, is taken as it is;
// anything else is the path of a file holding it, which must be there.
// Errors name the path only when the value is written as one (it starts
// with / or .): a value given by mistake may be a secret.
func readJWTKey(value string) (string, error) {
	if value == "" || strings.Contains(value, "-----BEGIN") {
		return value, nil
	}
	info, err := os.Stat(value)
	switch {
	case err == nil && info.Mode().IsRegular():
		data, err := os.ReadFile(value)
		return string(data), err
	case err != nil && isBase64(value):
		return value, nil
	case !strings.HasPrefix(value, "/") && !strings.HasPrefix(value, "."):
		return "", errors.New("it is neither PEM text nor the path of a file: give the PEM text, or the path of a file holding it")
	case err != nil:
		return "", fmt.Errorf("%v: give the PEM text, or the path of a file holding it", err)
	}
	return "", fmt.Errorf("%s is not a regular file: give the PEM text, or the path of a file holding it", value)
}

// isBase64 reports whether s is standard base64, padded, whatever spaces
// and line breaks it holds: a key's body without its PEM lines.
func isBase64(s string) bool {
	_, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	return err == nil
}

// optionalDuration is a duration of the configuration as verify reads
// one: nil when not set (the default), else its value.
func optionalDuration(d *caddy.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	return new(time.Duration(*d))
}

// keyOff is the value of a key that turns it off: no key, where leaving
// the key out takes the one of its environment variable.
const keyOff = "off"

// field is a configured value that may hold placeholders: its name in the
// configuration, the value configured, what stands for it when it is not
// configured (an environment placeholder), where the expanded value goes,
// what an expansion to nothing of that default means (usually nothing),
// and whether keyOff turns it off.
type field struct {
	name       string
	configured string
	whenUnset  string
	dest       *string
	whenEmpty  string
	offable    bool
}

// keyField is a key of clerk_m2m: its variable's when not set, none when
// off.
func keyField(name, configured, whenUnset string, dest *string) field {
	return field{name: name, configured: configured, whenUnset: whenUnset, dest: dest, offable: true}
}

// apiURLField is the field both handlers have.
func apiURLField(configured string, dest *string) field {
	return field{name: "api_url", configured: configured, whenUnset: "{env.CLERK_API_URL}", dest: dest, whenEmpty: backend.DefaultURL}
}

// expandFields resolves placeholders in each configured value, or in its
// environment default when it is not set, and trims the result. A value set
// explicitly that expands to nothing (Caddy reads a missing file as empty)
// is an error: it must not quietly mean "no key".
func expandFields(repl *caddy.Replacer, fields ...field) error {
	for _, f := range fields {
		if f.offable && f.configured == keyOff {
			*f.dest = ""
			continue
		}
		value, explicit := f.configured, f.configured != ""
		if !explicit {
			value = f.whenUnset
		}
		expanded, err := repl.ReplaceOrErr(value, false, true)
		if err != nil {
			return fmt.Errorf("%s: %v", f.name, err)
		}
		*f.dest = strings.TrimSpace(expanded)
		if explicit && *f.dest == "" {
			return fmt.Errorf("%s is set to %q, which is empty: is the file or environment variable there?", f.name, value)
		}
		if *f.dest == "" {
			*f.dest = f.whenEmpty
		}
	}
	return nil
}

// expandList resolves placeholders in a list; one entry may stand for
// several values, separated by spaces or commas.
func expandList(repl *caddy.Replacer, name string, entries []string) ([]string, error) {
	var values []string
	for _, entry := range entries {
		expanded, err := repl.ReplaceOrErr(entry, false, true)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		values = append(values, strings.FieldsFunc(expanded, func(r rune) bool { return r == ',' || r == ' ' })...)
	}
	return values, nil
}
