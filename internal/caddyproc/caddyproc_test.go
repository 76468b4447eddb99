package caddyproc_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestStartServesTheCaddyfile(t *testing.T) {
	t.Setenv("CLERK_SECRET_KEY", "sk_test_of_the_developer")
	caddy := caddyproc.Start(t, func(p caddyproc.Ports) string {
		return fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\thttp_port %d\n}\nhttp://127.0.0.1:%d {\n\trespond \"hello {env.GREETING}{env.CLERK_SECRET_KEY}\"\n}\n",
			p.Admin, p.HTTP, p.HTTP)
	}, "GREETING=world")
	_, body := get(t, caddy.URL()+"/")
	assert.Equal(t, "hello world", body, "the Clerk variables are emptied")
	status, _ := get(t, caddy.AdminURL()+"/config/")
	assert.Equal(t, http.StatusOK, status)
}

func TestRunServesJSONOnMorePorts(t *testing.T) {
	caddy, err := caddyproc.Run(caddyproc.Command{Binary: caddyproc.Binary(t), MorePorts: 1, Config: func(p caddyproc.Ports) ([]byte, error) {
		return fmt.Appendf(nil, `{"admin":{"listen":"127.0.0.1:%d"},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:%d"],`+
			`"routes":[{"handle":[{"handler":"static_response","body":"json"}]}]}}}}}`, p.Admin, p.More[0]), nil
	}})
	require.NoError(t, err)
	defer caddy.Stop()
	_, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/", caddy.Ports.More[0]))
	assert.Equal(t, "json", body)
}

func TestMetricReadsASample(t *testing.T) {
	caddy := caddyproc.Start(t, func(p caddyproc.Ports) string {
		return fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\thttp_port %d\n\tmetrics\n}\nhttp://127.0.0.1:%d {\n\trespond \"hello\"\n}\n",
			p.Admin, p.HTTP, p.HTTP)
	})
	for range 2 {
		resp, err := http.Get(caddy.URL() + "/")
		require.NoError(t, err)
		resp.Body.Close()
	}
	assert.Equal(t, 2.0, caddy.Metric(t, `caddy_http_requests_total{handler="subroute",server="srv0"}`))
	assert.Zero(t, caddy.Metric(t, "no_such_metric"))
}
