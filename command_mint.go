package clerkm2m

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/mint"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

func mintCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mint [--format opaque|jwt] [--ttl <duration>] [--claims <json>] [--min-remaining-ttl <duration>]",
		Short: "Mints an M2M token as a machine and prints it alone",
		Long: `
Mints an M2M token as the machine whose secret key it is given (the
calling machine: --machine-secret-key, else CLERK_MACHINE_SECRET_KEY, which
on a gateway's host is the gateway's own machine) as clerk_m2m_token does,
and prints the token alone on standard output, so that a service can be
tried through its gateway in one line:

  curl -H "Authorization: Bearer $(caddy clerk-m2m mint)" https://api.example.com/

Everything else (the machine it minted as, the token's id, scopes and
expiry) goes to standard error. Each mint is billed by Clerk:
--min-remaining-ttl lets Clerk hand back a live token of the machine
instead, which is used only if it expires within --ttl of now; one that
outlives it (minted elsewhere with a longer ttl, or none) is not, and a new
token is minted: one more billed mint.

Exit status: 0 minted; 1 a usage error; 5 Clerk did not mint (it rejected
the key, misconfigured; refused the request; clerk_unavailable,
clerk_rate_limited), as clerk_m2m_token answers 500 or 503.
`,
		DisableFlagsInUseLine: true,
		Args:                  cobra.ArbitraryArgs, // refused by runMint, which does not echo them: one may be a key
		RunE:                  func(cmd *cobra.Command, args []string) error { return exitWith(cmd, runMint(cmd, args)) },
	}
	flags := cmd.Flags()
	flags.SetNormalizeFunc(flagSpelling)
	flags.String("machine-secret-key", "", "the secret key of the machine to mint as, ak_…: the calling machine "+
		"(default {env.CLERK_MACHINE_SECRET_KEY}, on a gateway's host the gateway's own)")
	flags.String("api-url", "", "Clerk's Backend API (default {env.CLERK_API_URL}, else https://api.clerk.com)")
	flags.String("format", "", "opaque (mt_…, verified by Clerk) or jwt (verified without a call to Clerk) (default opaque)")
	flags.String("ttl", "", "the token's lifetime, at most 24h (default 1h)")
	flags.String("min-remaining-ttl", "", "hand back a live opaque token of the machine with at least this much life left, "+
		"instead of minting one, if it expires within --ttl")
	flags.String("claims", "", `custom claims, a JSON object such as '{"job":"nightly-sync"}'`)
	flags.String("timeout", "", "budget of the call to Clerk (default 5s)")
	return cmd
}

func runMint(cmd *cobra.Command, args []string) int {
	if len(args) > 0 {
		return usageError(cmd, "mint takes no arguments, only flags (see --help)")
	}
	warnIfSecretInArgs(cmd, "machine-secret-key", "CLERK_MACHINE_SECRET_KEY")
	h, claims, err := mintSettings(cmd)
	if err != nil {
		return usageError(cmd, "%v", err)
	}
	token := h.tokenOptions()
	token.Claims = claims
	apiURL, err := backend.ParseURL(h.apiURL)
	if err != nil {
		return usageError(cmd, "api_url: %v", err)
	}
	httpClient := backend.NewHTTPClient(0)
	defer httpClient.CloseIdleConnections()
	client, err := newMintClient(apiURL, h.machineSecretKey, httpClient, nil)
	if err != nil {
		return usageError(cmd, "%v", err)
	}
	minted, err := mint.Mint(context.Background(), client, mint.Options{Token: token, Timeout: time.Duration(*h.Timeout),
		OnDeclined: func(time.Time) {
			printf(cmd.ErrOrStderr(), "%s: Clerk handed back a live token that expires later than --ttl from now: "+
				"minting a new one\n", cmd.CommandPath())
		}})
	if err != nil {
		return mintFailed(cmd, err)
	}
	created := minted.CreatedM2MToken
	if inspected, err := verify.Inspect(created.Token); err != nil || inspected.TokenType != verify.M2MToken {
		// Printed as it is, it could be anything: fail closed.
		printf(cmd.ErrOrStderr(), "%s: %s: Clerk answered with something that is no M2M token\n", cmd.CommandPath(), verify.ReasonUnavailable)
		return exitTrouble
	}
	printf(cmd.OutOrStdout(), "%s\n", created.Token)
	expiry := "never expires"
	if created.Expiration != nil {
		at := time.UnixMilli(*created.Expiration)
		expiry = utcDate(at) + ", " + expiryPhrase(at, time.Now())
	}
	what := "an opaque M2M token"
	if h.Format == "jwt" {
		what = "an M2M JWT"
	}
	keyFrom := "CLERK_MACHINE_SECRET_KEY"
	if cmd.Flags().Changed("machine-secret-key") {
		keyFrom = "--machine-secret-key"
	}
	printf(cmd.ErrOrStderr(), "%s: minted %s as machine %s (the machine of %s), id %s; it may call: %s; expires %s\n",
		cmd.CommandPath(), what, shown(created.Subject), keyFrom, shown(created.ID), orNone(strings.Join(created.Scopes, " ")), expiry)
	return exitOK
}

// mintSettings are the clerk_m2m_token settings the flags describe, with
// its defaults and its checks, and the claims.
func mintSettings(cmd *cobra.Command) (*MintHandler, map[string]any, error) {
	flags := cmd.Flags()
	if err := refusePlaceholders(cmd, "api-url"); err != nil { // its errors show it; the other flags are not expanded
		return nil, nil, err
	}
	h := new(MintHandler)
	h.MachineSecretKey, _ = flags.GetString("machine_secret_key")
	h.APIURL, _ = flags.GetString("api_url")
	h.Format, _ = flags.GetString("format")
	for name, dest := range map[string]**caddy.Duration{"ttl": &h.TTL, "timeout": &h.Timeout} {
		d, set, err := durationFlag(flags, name)
		if err != nil {
			return nil, nil, err
		}
		if set {
			*dest = &d
		}
	}
	var err error
	if h.MinRemainingTTL, _, err = durationFlag(flags, "min_remaining_ttl"); err != nil { // not set: 0, none
		return nil, nil, err
	}
	claims, err := claimsFlag(flags.Lookup("claims").Value.String())
	if err != nil {
		return nil, nil, err
	}
	if err := h.expand(); err != nil {
		return nil, nil, err
	}
	h.applyDefaults()
	return h, claims, h.Validate()
}

// claimsFlag reads --claims: one JSON object, or nothing.
func claimsFlag(text string) (map[string]any, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	var claims map[string]any
	if err := decodeNumbers([]byte(text), &claims); err != nil || claims == nil {
		return nil, errors.New(`--claims must be one JSON object, such as '{"job":"nightly-sync"}'`)
	}
	return claims, nil
}

// mintFailed says why Clerk minted nothing, naming the trouble as the
// handlers do, and returns the exit status.
func mintFailed(cmd *cobra.Command, err error) int {
	reason := verify.ReasonOf(err)
	say := func(what string) { printf(cmd.ErrOrStderr(), "%s: %s: %s: %v\n", cmd.CommandPath(), reason, what, err) }
	switch reason {
	case verify.ReasonMisconfigured:
		say("Clerk rejected the machine secret key")
	case verify.ReasonInvalid:
		printf(cmd.ErrOrStderr(), "%s: Clerk refused to mint: %v\n", cmd.CommandPath(), err)
	case verify.ReasonRateLimited:
		var apiErr *backend.Error
		errors.As(err, &apiErr)
		say(fmt.Sprintf("Clerk is rate-limiting; try again in %ss", retryAfterSeconds(apiErr.RetryAfter)))
	default:
		say("Clerk could not mint")
	}
	return exitTrouble
}
