package clerkm2m

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "clerk-m2m",
		Short: "Inspects a Clerk credential as clerk_m2m sees it, or mints an M2M token",
		Long: `
Tools for operators of the clerk_m2m and clerk_m2m_token handlers.

  caddy clerk-m2m inspect   why a credential is accepted or refused, and what
                            the handler would hand to the next handlers
  caddy clerk-m2m mint      an M2M token of a machine, alone on standard
                            output, to try a service through the gateway

Flags are named after the subdirectives (--secret_key, --require_scopes);
--secret-key and --require-scopes work too. Secret keys are best left to the
environment variables the handlers read (CLERK_SECRET_KEY,
CLERK_MACHINE_SECRET_KEY), or given as placeholders such as
'{file./run/secrets/clerk}': on the command line they are kept in shell
history and shown by ps. Only the keys' flags expand placeholders: the
others may be printed, and take the value itself.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(inspectCommand(), mintCommand())
			cmd.SetGlobalNormalizationFunc(subdirectiveSpelling)
			cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
				return exitWith(cmd, usageError(cmd, "%v (see --help)", err))
			})
		},
	})
}

// Exit statuses of the commands.
const (
	exitOK      = 0 // accepted, or minted
	exitRefused = 1 // the credential, or the key, is refused
	exitTrouble = 2 // a usage error, or Clerk trouble: no verdict
)

// subdirectiveSpelling lets a flag be spelled with dashes, as most
// commands' are, as well as with the underscores of the subdirectives.
func subdirectiveSpelling(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	return pflag.NormalizedName(strings.ReplaceAll(name, "-", "_"))
}

// errRefused ends a command with status 1 without another word: what was
// refused has been said already.
var errRefused = errors.New("refused")

// exitWith is what makes Caddy's main exit with status: nothing for 0, a
// silenced error for 1 (the status main gives any error), and for 2 the
// exit error that only caddycmd.WrapCommandFuncForCobra makes.
func exitWith(cmd *cobra.Command, status int) error {
	cmd.SilenceErrors = true
	switch status {
	case exitOK:
		return nil
	case exitRefused:
		return errRefused
	}
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return status, nil })(cmd, nil)
}

// usageError says on standard error what is wrong with how the command
// was run, and returns its status, 2. The message must never hold a
// credential or a key.
func usageError(cmd *cobra.Command, format string, args ...any) int {
	printf(cmd.ErrOrStderr(), "%s: %s\n", cmd.CommandPath(), fmt.Sprintf(format, args...))
	return exitTrouble
}

// warnIfSecretInArgs warns when a secret key was given on the command line
// as it is, where shell history and ps keep it; a placeholder
// ({env.NAME}, {file.path}) keeps it out.
func warnIfSecretInArgs(cmd *cobra.Command, flag, envName string) {
	value, _ := cmd.Flags().GetString(flag)
	if value != "" && !strings.Contains(value, "{") {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: --%s on the command line is kept in shell history and shown by ps; "+
			"prefer %s, or --%s '{file./path/to/key}'\n", cmd.CommandPath(), flag, envName, flag)
	}
}

// refusePlaceholders refuses a placeholder in the flags named, which the
// command would expand, and which its output may show: in the settings a
// report was checked with, in a WWW-Authenticate challenge (scope="…"),
// in errors (an unknown token type, a URL in a failed call). A placeholder
// there could print a secret (--require_scopes {env.CLERK_SECRET_KEY}), so
// only the keys' flags, which nothing prints, expand one; the others take
// the value itself, which the shell can expand ("$NAME"). The error does
// not echo the value.
func refusePlaceholders(cmd *cobra.Command, names ...string) error {
	for _, name := range names {
		if flag := cmd.Flags().Lookup(name); flag.Changed && strings.Contains(flag.Value.String(), "{") {
			return fmt.Errorf("--%s: placeholders ({env.NAME}, {file.path}) are expanded only in the keys' flags, whose values "+
				"are never printed; give the value itself (in a shell, \"$NAME\")", name)
		}
	}
	return nil
}

// durationFlag reads a duration flag the way Caddy reads durations (1h,
// 30s, 2d); set is false when the flag was not given.
func durationFlag(flags *pflag.FlagSet, name string) (d caddy.Duration, set bool, err error) {
	if !flags.Changed(name) {
		return 0, false, nil
	}
	text, _ := flags.GetString(name)
	parsed, err := caddy.ParseDuration(text)
	if err != nil {
		return 0, true, fmt.Errorf("--%s: %v", name, err)
	}
	return caddy.Duration(parsed), true, nil
}

// printf writes to w, for reports whose write errors cannot be acted on
// (a closed pipe ends the command anyway).
func printf(w io.Writer, format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
