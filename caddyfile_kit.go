package clerkm2m

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

// registerDirective registers the directive of handler H, set up from the
// directive's block, in Caddy's order of directives at position to anchor.
func registerDirective[H any, P interface {
	*H
	caddyhttp.MiddlewareHandler
	caddyfile.Unmarshaler
}](name string, position httpcaddyfile.Positional, anchor string) {
	httpcaddyfile.RegisterHandlerDirective(name, func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		handler := P(new(H))
		err := handler.UnmarshalCaddyfile(h.Dispenser)
		return handler, err
	})
	httpcaddyfile.RegisterDirectiveOrder(name, position, anchor)
}

// subdirective is one line of a directive's block: its name, and how its
// arguments are read into the handler H.
type subdirective[H any] struct {
	name string
	read func(d *caddyfile.Dispenser, h *H) error
}

// block is a directive's subdirectives, in the order its syntax lists them.
type block[H any] []subdirective[H]

// unmarshal reads a directive that takes no argument on its line, only a
// block of subdirectives of b, each given at most once.
func (b block[H]) unmarshal(d *caddyfile.Dispenser, h *H) error {
	d.Next() // the directive's name
	directive := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes no arguments on its line, only a block of subdirectives; got %q", directive, d.Val())
	}
	return b.read(d, h, directive)
}

// read reads the block that follows on the dispenser, if any: b's
// subdirectives, each given at most once. directive names the block in
// errors.
func (b block[H]) read(d *caddyfile.Dispenser, h *H, directive string) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("subdirective %s given twice", name)
		}
		seen[name] = true
		i := slices.IndexFunc(b, func(s subdirective[H]) bool { return s.name == name })
		if i < 0 {
			return d.Errf("unknown subdirective %q in %s (known: %s)", name, directive, strings.Join(b.names(), ", "))
		}
		if err := b[i].read(d, h); err != nil {
			return err
		}
	}
	return nil
}

// names lists the subdirectives of b.
func (b block[H]) names() []string {
	names := make([]string, len(b))
	for i, s := range b {
		names[i] = s.name
	}
	return names
}

// textArg is a subdirective of one argument, which may not be empty: a
// value left out takes the default, and "" would look like none.
func textArg[H any](name string, field func(*H) *string) subdirective[H] {
	return nonEmptyArg(name, field, "")
}

// keyArg is a subdirective of one key, which off turns off: no key, where
// leaving it out takes the one of the environment variable.
func keyArg[H any](name string, field func(*H) *string) subdirective[H] {
	return nonEmptyArg(name, field, ", or write "+name+" "+keyOff+" for no key")
}

// nonEmptyArg is a subdirective of one argument that may not be empty;
// orElse says what to write instead, besides leaving it out.
func nonEmptyArg[H any](name string, field func(*H) *string, orElse string) subdirective[H] {
	return subdirective[H]{name, func(d *caddyfile.Dispenser, h *H) error {
		if err := singleArg(d, field(h)); err != nil {
			return err
		}
		if *field(h) == "" {
			return d.Errf("%s is empty: leave %s out for its default%s", name, name, orElse)
		}
		return nil
	}}
}

// listArg is a subdirective of one or more arguments.
func listArg[H any](name string, field func(*H) *[]string) subdirective[H] {
	return subdirective[H]{name, func(d *caddyfile.Dispenser, h *H) error {
		*field(h) = d.RemainingArgs()
		if len(*field(h)) == 0 {
			return d.Errf("%s needs at least one value%s", name, unsetVariableHint)
		}
		return nil
	}}
}

// flagArg is a subdirective that takes no argument.
func flagArg[H any](name string, field func(*H) *bool) subdirective[H] {
	return subdirective[H]{name, func(d *caddyfile.Dispenser, h *H) error {
		if d.NextArg() {
			return d.Errf("%s takes no value: write %s alone to turn it on (it is off when left out)", name, name)
		}
		*field(h) = true
		return nil
	}}
}

// durationArg is a subdirective of one duration.
func durationArg[H any](name string, field func(*H) *caddy.Duration) subdirective[H] {
	return subdirective[H]{name, func(d *caddyfile.Dispenser, h *H) error { return readDuration(d, name, field(h)) }}
}

// optionalDurationArg is a subdirective of one duration whose field tells
// "not set" (the default) from 0.
func optionalDurationArg[H any](name string, field func(*H) **caddy.Duration) subdirective[H] {
	return subdirective[H]{name, func(d *caddyfile.Dispenser, h *H) error {
		*field(h) = new(caddy.Duration)
		return readDuration(d, name, *field(h))
	}}
}

// blockArg is a subdirective of one argument, which arg reads, and a
// block of b's subdirectives, which may be left out; field holds the
// value they set up.
func blockArg[H, B any](name string, field func(*H) **B, arg func(*B) *string, b block[B]) subdirective[H] {
	return subdirective[H]{name, func(d *caddyfile.Dispenser, h *H) error {
		value := new(B)
		if err := singleArg(d, arg(value)); err != nil {
			return err
		}
		*field(h) = value
		return b.read(d, value, name)
	}}
}

// unsetVariableHint is why a subdirective may have been left without a
// value: the Caddyfile's {$VARIABLE} is replaced when it is adapted, by
// nothing when the variable is not set.
const unsetVariableHint = " (a {$VARIABLE} that is not set leaves none: set it, or write {env.VARIABLE}, " +
	"read when the configuration loads)"

// singleArg reads the one argument of a subdirective. The errors never
// repeat a value, which may be a key.
func singleArg(d *caddyfile.Dispenser, dest *string) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s needs a value%s", name, unsetVariableHint)
	}
	*dest = d.Val()
	if d.NextArg() {
		return d.Errf("%s takes one value, not more (a value with spaces goes in quotes)", name)
	}
	return nil
}

// readDuration reads the one argument of a subdirective as a duration.
func readDuration(d *caddyfile.Dispenser, name string, dest *caddy.Duration) error {
	var text string
	if err := singleArg(d, &text); err != nil {
		return err
	}
	value, err := caddy.ParseDuration(text)
	if err != nil {
		return d.Errf("%s: %v", name, err)
	}
	*dest = caddy.Duration(value)
	return nil
}

// countArg is a subdirective of one whole number above 0.
func countArg[H any](name string, field func(*H) *int) subdirective[H] {
	return valueArg(name, "a whole number above 0", field, func(text string) (int, bool) {
		n, err := strconv.Atoi(text)
		return n, err == nil && n > 0
	})
}

// sizeArg is a subdirective of one size in bytes above 0: a number, or one
// with a unit (64MiB, 500KB).
func sizeArg[H any](name string, field func(*H) *int64) subdirective[H] {
	return valueArg(name, "a size above 0, such as 64MiB", field, func(text string) (int64, bool) {
		size, err := humanize.ParseBytes(text)
		return int64(size), err == nil && size > 0 && size <= math.MaxInt64
	})
}

// valueArg is a subdirective of one value, which parse reads, or refuses
// for not being what want says.
func valueArg[H, T any](name, want string, field func(*H) *T, parse func(string) (T, bool)) subdirective[H] {
	return subdirective[H]{name, func(d *caddyfile.Dispenser, h *H) error {
		var text string
		if err := singleArg(d, &text); err != nil {
			return err
		}
		value, ok := parse(text)
		if !ok {
			return d.Errf("%s: %q is not %s", name, text, want)
		}
		*field(h) = value
		return nil
	}}
}
