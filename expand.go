package clerkm2m

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-clerk/clerk-m2m/backend"
)

// field is a configured value that may hold placeholders: its name in the
// configuration, the value configured, what stands for it when it is not
// configured (an environment placeholder), where the expanded value goes,
// and what an expansion to nothing of that default means (usually
// nothing).
type field struct {
	name       string
	configured string
	whenUnset  string
	dest       *string
	whenEmpty  string
}

// apiURLField and machineSecretKeyField are the fields both handlers have.
func apiURLField(configured string, dest *string) field {
	return field{name: "api_url", configured: configured, whenUnset: "{env.CLERK_API_URL}", dest: dest, whenEmpty: backend.DefaultURL}
}

func machineSecretKeyField(configured string, dest *string) field {
	return field{name: "machine_secret_key", configured: configured, whenUnset: "{env.CLERK_MACHINE_SECRET_KEY}", dest: dest}
}

// expandFields resolves placeholders in each configured value, or in its
// environment default when it is not set, and trims the result. A value set
// explicitly that expands to nothing (Caddy reads a missing file as empty)
// is an error: it must not quietly mean "no key".
func expandFields(repl *caddy.Replacer, fields ...field) error {
	for _, f := range fields {
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

// durationPtr is d as an optional duration of the configuration.
func durationPtr(d time.Duration) *caddy.Duration {
	cd := caddy.Duration(d)
	return &cd
}
