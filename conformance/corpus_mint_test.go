package conformance

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// mintCase is one token minted by each side for a machine of its own:
// clerk_m2m_token on the module's, the SDK's m2m.createToken on the
// other. What each asks Clerk is compared.
type mintCase struct {
	id           string
	minter       *backendtest.Machine
	format       string
	ttl          time.Duration
	minRemaining time.Duration
	claims       map[string]string
}

func (c *corpus) mints() []*mintCase {
	cases := []*mintCase{
		{id: "opaque", format: "opaque", ttl: time.Hour},
		{id: "jwt-with-claims", format: "jwt", ttl: 15 * time.Minute, claims: map[string]string{"team": "billing", "region": "eu"}},
		{id: "opaque-reusing-a-live-token", format: "opaque", ttl: time.Hour, minRemaining: 10 * time.Minute},
		{id: "jwt-without-claims", format: "jwt", ttl: 15 * time.Minute},
	}
	for _, m := range cases {
		m.minter = c.in.clerk.NewMachine("minter-" + m.id)
	}
	return cases
}

// envKey is the environment variable that hands the minter's key to Caddy.
func (m *mintCase) envKey() string {
	return "CONFORMANCE_MINTER_" + strings.ToUpper(strings.ReplaceAll(m.id, "-", "_"))
}

// sdkParams are m2m.createToken's parameters.
func (m *mintCase) sdkParams() map[string]any {
	params := map[string]any{
		"machineSecretKey": m.minter.SecretKey, "tokenFormat": m.format,
		"secondsUntilExpiration": int64(m.ttl / time.Second),
	}
	if m.minRemaining > 0 {
		params["minRemainingTtlSeconds"] = int64(m.minRemaining / time.Second)
	}
	if len(m.claims) > 0 {
		params["claims"] = m.claims
	}
	return params
}

// route is the module's side: a route that mints, at /mint/<id>.
func (m *mintCase) route() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\thandle /mint/%s {\n\t\troute {\n\t\t\tclerk_m2m_token {\n", m.id)
	fmt.Fprintf(&b, "\t\t\t\tmachine_secret_key {env.%s}\n\t\t\t\tapi_url {env.%s}\n", m.envKey(), envAPIURL)
	fmt.Fprintf(&b, "\t\t\t\tformat %s\n\t\t\t\tttl %s\n", m.format, m.ttl)
	if m.minRemaining > 0 {
		fmt.Fprintf(&b, "\t\t\t\tmin_remaining_ttl %s\n", m.minRemaining)
	}
	if len(m.claims) > 0 {
		names := make([]string, 0, len(m.claims))
		for name := range m.claims {
			names = append(names, name)
		}
		sort.Strings(names)
		b.WriteString("\t\t\t\tclaims {\n")
		for _, name := range names {
			fmt.Fprintf(&b, "\t\t\t\t\t%s %s\n", name, m.claims[name])
		}
		b.WriteString("\t\t\t\t}\n")
	}
	b.WriteString("\t\t\t}\n\t\t\trespond \"minted\" 200\n\t\t}\n\t}\n")
	return b.String()
}

// wireKey is how the requests of a mint are told apart: by the minter's
// key, which only they carry.
func (m *mintCase) wireKey() string { return mintAbout(m.minter.SecretKey) }

func mintAbout(key string) string { return "mint by " + key }
