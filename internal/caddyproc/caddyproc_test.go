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

func TestMain(m *testing.M) { caddyproc.Main(m) }

func TestStartServesTheConfig(t *testing.T) {
	caddy := caddyproc.Start(t, func(p caddyproc.Ports) string {
		return fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\thttp_port %d\n}\nhttp://127.0.0.1:%d {\n\trespond \"hello {env.GREETING}\"\n}\n",
			p.Admin, p.HTTP, p.HTTP)
	}, "GREETING=world")
	resp, err := http.Get(caddy.URL() + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "hello world", string(body))

	modules, err := http.Get(caddy.AdminURL() + "/config/")
	require.NoError(t, err)
	modules.Body.Close()
	assert.Equal(t, http.StatusOK, modules.StatusCode)
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
