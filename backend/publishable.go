package backend

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// PublishableKey is what a publishable key says of its Clerk instance.
type PublishableKey struct {
	// FrontendAPI is the host (and port) of the instance's Frontend API,
	// as the key spells it: the issuer of its session tokens, without the
	// scheme.
	FrontendAPI string
	// Development: a pk_test_ key, of a development instance (pk_live_ is
	// production).
	Development bool
}

// ParsePublishableKey decodes a publishable key (pk_test_… or pk_live_…:
// the prefix, then the base64 of "<Frontend API host>$"), as Clerk's SDKs
// do, refusing a host that is not a plain host name.
func ParsePublishableKey(publishableKey string) (PublishableKey, error) {
	fail := func(why string) (PublishableKey, error) {
		return PublishableKey{}, fmt.Errorf("invalid publishable key: %s (it looks like pk_live_… or pk_test_…, as in Clerk's dashboard)", why)
	}
	parts := strings.Split(publishableKey, "_")
	if len(parts) != 3 || parts[0] != "pk" || (parts[1] != "test" && parts[1] != "live") {
		return fail("it does not start with pk_test_ or pk_live_")
	}
	decoded, err := base64.StdEncoding.DecodeString(padBase64(parts[2]))
	if err != nil {
		return fail("it is not base64")
	}
	host, found := strings.CutSuffix(string(decoded), "$")
	switch {
	case !found || strings.Contains(host, "$"):
		return fail("it does not end in one $")
	case !strings.Contains(host, "."):
		return fail("it names no host")
	}
	if err := checkHost(host); err != nil {
		return fail(err.Error())
	}
	return PublishableKey{FrontendAPI: host, Development: parts[1] == "test"}, nil
}

// URL is the base URL of the instance's Frontend API: https, except for a
// loopback host (a local test or proxy), which is plain http.
func (k PublishableKey) URL() string {
	scheme := "https"
	if IsLoopbackHost(strings.Trim(splitHost(k.FrontendAPI), "[]")) {
		scheme = "http"
	}
	return scheme + "://" + k.FrontendAPI
}

// checkHost refuses anything but host[:port]: no scheme, path, credentials
// or other URL parts can ride in a key.
func checkHost(host string) error {
	u, err := url.Parse("https://" + host)
	if err != nil || u.Host != host || u.Path != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("its host is not a plain host name")
	}
	return nil
}

func splitHost(host string) string {
	if name, _, err := net.SplitHostPort(host); err == nil {
		return name
	}
	return host
}

// IsLoopbackHost reports whether hostname (without port or brackets) is
// this machine's: localhost or a loopback address. Plain http is taken for
// such a host only, as no one else can listen on the way.
func IsLoopbackHost(hostname string) bool {
	ip := net.ParseIP(hostname)
	return hostname == "localhost" || ip != nil && ip.IsLoopback()
}

func padBase64(s string) string {
	if rest := len(s) % 4; rest != 0 {
		s += strings.Repeat("=", 4-rest)
	}
	return s
}
