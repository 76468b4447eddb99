package backend

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// FrontendAPIURL decodes a publishable key (pk_test_… or pk_live_…: the
// prefix, then the base64 of "<Frontend API host>$") into the base URL of
// the instance's Frontend API, as Clerk's SDKs do. The host is always https,
// except a loopback host (a local test or proxy), which is plain http.
func FrontendAPIURL(publishableKey string) (string, error) {
	fail := func(why string) (string, error) {
		return "", fmt.Errorf("invalid publishable key: %s (it looks like pk_live_… or pk_test_…, as in Clerk's dashboard)", why)
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
	scheme := "https"
	if IsLoopbackHost(strings.Trim(splitHost(host), "[]")) {
		scheme = "http"
	}
	return scheme + "://" + host, nil
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
