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

Flags are named after the subdirectives, with dashes (--secret-key,
--require-scopes); the subdirectives' own spelling, with underscores, works
too. Secret keys are best left to the environment variables the handlers
read (CLERK_SECRET_KEY, CLERK_MACHINE_SECRET_KEY), or given as placeholders
such as '{file./run/secrets/clerk}': on the command line they are kept in
shell history and shown by ps. Only the keys' flags expand placeholders:
the others may be printed, and take the value itself.

Exit status: 0 accepted, or minted; 1 the command could not do its work (a
usage error, no key, a configuration the handler refuses), as for any Caddy
command; 4 refused for what the credential is (the handler answers 401 or
403); 5 no verdict, because of Clerk or the keys (the handler answers 500
or 503).
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(inspectCommand(), mintCommand())
			cmd.Args = cobra.ArbitraryArgs // an unknown subcommand is runSubcommand's to refuse
			cmd.RunE = func(cmd *cobra.Command, args []string) error { return exitWith(cmd, runSubcommand(cmd, args)) }
			cmd.SetGlobalNormalizationFunc(flagSpelling)
			cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
				return exitWith(cmd, usageError(cmd, "%v (see --help)", err))
			})
			// Caddy's help ends with a link to its documentation, which does
			// not document these commands: this module's README does.
			cmd.SetHelpTemplate(new(cobra.Command).HelpTemplate() + "\nDocumented at " + commandsDocs + "\n")
		},
	})
}

// commandsDocs is where the commands are documented.
const commandsDocs = "https://github.com/caddy-clerk/clerk-m2m#commands"

// Exit statuses of the commands: 0 and 1 as every Caddy command's, and for
// a verdict, the class of the status the handler answers with.
const (
	exitOK      = 0 // accepted, or minted
	exitFailed  = 1 // the command could not do its work: a usage error, no key, a configuration refused
	exitRefused = 4 // refused for what the credential is: the handler answers 401 or 403
	exitTrouble = 5 // no verdict, because of Clerk or the keys: the handler answers 500 or 503
)

// runSubcommand is what caddy clerk-m2m does without a subcommand it
// knows: its help for none, and for another, an error that suggests the
// one meant.
func runSubcommand(cmd *cobra.Command, args []string) int {
	if len(args) == 0 {
		_ = cmd.Help()
		return exitOK
	}
	message := fmt.Sprintf("unknown command %q", args[0])
	cmd.SuggestionsMinimumDistance = 2 // cobra's own, which it sets only for a root command
	if suggestions := cmd.SuggestionsFor(args[0]); len(suggestions) > 0 {
		message += ": did you mean " + strings.Join(suggestions, " or ") + "?"
	}
	return usageError(cmd, "%s (see --help)", message)
}

// flagSpelling spells every flag with dashes, as Caddy's commands spell
// theirs, and takes the underscores of the subdirectives too.
func flagSpelling(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	return pflag.NormalizedName(flagName(name))
}

// flagName is the flag of a subdirective (or of any name with
// underscores): secret_key's is secret-key.
func flagName(name string) string { return strings.ReplaceAll(name, "_", "-") }

// errFailed ends a command with status 1 without another word: what went
// wrong has been said already.
var errFailed = errors.New("failed")

// exitWith is what makes Caddy's main exit with status: nothing for 0, a
// silenced error for 1 (the status main gives any error), and for the
// others the exit error that only caddycmd.WrapCommandFuncForCobra makes.
func exitWith(cmd *cobra.Command, status int) error {
	cmd.SilenceErrors = true
	switch status {
	case exitOK:
		return nil
	case exitFailed:
		return errFailed
	}
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return status, nil })(cmd, nil)
}

// usageError says on standard error what is wrong with how the command
// was run, and returns its status, 1. The message must never hold a
// credential or a key.
func usageError(cmd *cobra.Command, format string, args ...any) int {
	printf(cmd.ErrOrStderr(), "%s: %s\n", cmd.CommandPath(), fmt.Sprintf(format, args...))
	return exitFailed
}

// warnIfSecretInArgs warns when a secret key was given on the command line
// as it is, where shell history and ps keep it; a placeholder
// ({env.NAME}, {file.path}) keeps it out.
func warnIfSecretInArgs(cmd *cobra.Command, flag, envName string) {
	value, _ := cmd.Flags().GetString(flag)
	if value != "" && !strings.Contains(value, "{") {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: warning: --%s on the command line is kept in shell history and shown by ps; "+
			"prefer %s, or --%s '{file./path/to/key}'\n", cmd.CommandPath(), flagName(flag), envName, flagName(flag))
	}
}

// refusePlaceholders refuses a placeholder in the flags named, which the
// command would expand, and which its output may show: in the settings a
// report was checked with, in a WWW-Authenticate challenge (scope="…"),
// in errors (an unknown token type, a URL in a failed call). A placeholder
// there could print a secret (--require-scopes {env.CLERK_SECRET_KEY}), so
// only the keys' flags, which nothing prints, expand one; the others take
// the value itself, which the shell can expand ("$NAME"). The error does
// not echo the value.
func refusePlaceholders(cmd *cobra.Command, names ...string) error {
	for _, name := range names {
		if flag := cmd.Flags().Lookup(name); flag.Changed && strings.Contains(flag.Value.String(), "{") {
			return fmt.Errorf("--%s: placeholders ({env.NAME}, {file.path}) are expanded only in the keys' flags, whose values "+
				"are never printed; give the value itself (in a shell, \"$NAME\")", flagName(name))
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
		return 0, true, fmt.Errorf("--%s: %v", flagName(name), err)
	}
	return caddy.Duration(parsed), true, nil
}

// printf writes to w, for reports whose write errors cannot be acted on
// (a closed pipe ends the command anyway).
func printf(w io.Writer, format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
