package clerkm2m

import (
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
)

func TestMetricsRegisterOncePerRegistryAndAgainOnReload(t *testing.T) {
	first := prometheus.NewPedanticRegistry()
	require.NoError(t, registerMetrics(first))
	require.NoError(t, registerMetrics(first), "a second handler of the same configuration")
	second := prometheus.NewPedanticRegistry() // the next configuration's
	require.NoError(t, registerMetrics(second))
	countingObserver{}.verification("m2m_token", "jwt", outcomeVerified)
	for _, registry := range []*prometheus.Registry{first, second} {
		count, err := testutil.GatherAndCount(registry, "caddy_clerk_m2m_verifications_total")
		require.NoError(t, err)
		assert.Positive(t, count)
	}
}

func TestHandlerCountsOutcomes(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	gateway := clerk.NewMachine("gateway")
	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{Scopes: []string{gateway.ID}})
	counter := func(tokenType, format, outcome string) float64 {
		return testutil.ToFloat64(metrics.verifications.WithLabelValues(tokenType, format, outcome))
	}
	lookups := func(cache, result string) float64 {
		return testutil.ToFloat64(metrics.cacheLookups.WithLabelValues(cache, result))
	}
	calls := func() float64 {
		return testutil.ToFloat64(metrics.clerkRequests.WithLabelValues("/m2m_tokens/verify", "ok"))
	}

	h := &Handler{MachineSecretKey: gateway.SecretKey, APIURL: clerk.URL, Optional: true}
	require.NoError(t, provision(t, h))
	before := map[string]float64{
		"verified": counter("m2m_token", "opaque", "verified"), "anonymous": counter("unknown", "unknown", "anonymous"),
		"invalid": counter("unknown", "unknown", "token_invalid"), "miss": lookups("opaque", "miss"),
		"hit": lookups("opaque", "hit"), "calls": calls(),
	}
	for _, authorization := range []string{"Bearer " + token, "Bearer " + token, "", "Basic x"} {
		_, _ = through(t, h, authorization)
	}
	assert.Equal(t, 2.0, counter("m2m_token", "opaque", "verified")-before["verified"])
	assert.Equal(t, 1.0, counter("unknown", "unknown", "anonymous")-before["anonymous"])
	assert.Equal(t, 1.0, counter("unknown", "unknown", "token_invalid")-before["invalid"])
	assert.Equal(t, 1.0, lookups("opaque", "miss")-before["miss"])
	assert.Equal(t, 1.0, lookups("opaque", "hit")-before["hit"])
	assert.Equal(t, 1.0, calls()-before["calls"])

	quiet := &Handler{MachineSecretKey: gateway.SecretKey, APIURL: clerk.URL, DisableMetrics: true}
	require.NoError(t, provision(t, quiet))
	verified := counter("m2m_token", "opaque", "verified")
	hits := lookups("opaque", "hit")
	_, _ = through(t, quiet, "Bearer "+token)
	assert.Equal(t, verified, counter("m2m_token", "opaque", "verified"), "disable_metrics counts nothing")
	assert.Equal(t, hits, lookups("opaque", "hit"))
}

// TestDisableMetricsCoversTheSigningKeys: a handler with disable_metrics
// does not count the key fetches it makes, nor report their age.
func TestDisableMetricsCoversTheSigningKeys(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	caller := clerk.NewMachine("caller")
	quiet := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, DisableMetrics: true}
	require.NoError(t, provision(t, quiet))
	fetches := testutil.ToFloat64(metrics.jwksFetches.WithLabelValues("success"))
	calls := testutil.ToFloat64(metrics.clerkRequests.WithLabelValues("/v1/jwks", "ok"))

	_, err := through(t, quiet, "Bearer "+clerk.MintM2MJWT(caller, backendtest.JWTOptions{}))
	require.NoError(t, err)
	require.Equal(t, 1, clerk.Calls("/v1/jwks"))
	assert.Equal(t, fetches, testutil.ToFloat64(metrics.jwksFetches.WithLabelValues("success")), "the key fetch is not counted")
	assert.Equal(t, calls, testutil.ToFloat64(metrics.clerkRequests.WithLabelValues("/v1/jwks", "ok")), "nor its call to Clerk")
	assert.NotContains(t, keySetAgesReported(t), clerk.URL, "nor the age of its keys")
}

// TestARejectedSecretKeyIsOneAnswerAndAnAgeFromTheStart: a gateway whose
// secret key Clerk rejects answers a JWT as it answers an opaque token,
// 500 misconfigured, and the age of its signing keys is reported from the
// first failed fetch on, counted from when the instance was made: the
// alerts on it fire for a gateway that never got keys.
func TestARejectedSecretKeyIsOneAnswerAndAnAgeFromTheStart(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	caller := clerk.NewMachine("caller")
	opaque, _ := clerk.CreateM2MToken(caller, backendtest.TokenOptions{})
	h := &Handler{SecretKey: "sk_test_revoked", APIURL: clerk.URL, Accept: []string{"m2m_token"}}
	require.NoError(t, provision(t, h))
	assert.NotContains(t, keySetAgesReported(t), clerk.URL, "nothing fetched yet")
	for _, token := range []string{clerk.MintM2MJWT(caller, backendtest.JWTOptions{}), opaque} {
		_, err := through(t, h, "Bearer "+token)
		var handlerErr caddyhttp.HandlerError
		require.ErrorAs(t, err, &handlerErr)
		assert.Equal(t, http.StatusInternalServerError, handlerErr.StatusCode, "%v", err)
		assert.ErrorContains(t, err, "misconfigured")
	}
	assert.Contains(t, keySetAgesReported(t), clerk.URL, "the keys' age, from the first failed fetch on")
	inst, ok := instanceOf(h)
	require.True(t, ok)
	assert.Equal(t, inst.created, inst.fetched[clerk.URL], "counted from when the instance was made")
}

// instanceOf is the shared instance a handler holds.
func instanceOf(h *Handler) (*instance, bool) {
	var found *instance
	pool.Range(func(key, value any) bool {
		if key == h.instance.key {
			found, _ = value.(*instance)
		}
		return true
	})
	return found, found != nil
}

// keySetAgesReported lists the APIs jwks_age_seconds reports on now.
func keySetAgesReported(t *testing.T) []string {
	metricsCh := make(chan prometheus.Metric, 16)
	go func() {
		metrics.jwksAge.Collect(metricsCh)
		close(metricsCh)
	}()
	var apis []string
	for metric := range metricsCh {
		var m dto.Metric
		require.NoError(t, metric.Write(&m))
		for _, label := range m.GetLabel() {
			apis = append(apis, label.GetValue())
		}
	}
	return apis
}

// TestSharedKeysAreCountedWhileACountedHandlerHoldsThem: a handler with
// disable_metrics shares the signing keys of the counted handlers of the
// same Clerk instance; fetching them is counted while a counted handler
// holds them, whichever handler's request made the fetch, and the quiet
// handler's own verifications never are.
func TestSharedKeysAreCountedWhileACountedHandlerHoldsThem(t *testing.T) {
	testenv.ClearClerk(t)
	clerk := backendtest.New()
	defer clerk.Close()
	caller := clerk.NewMachine("caller")
	counted := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL}
	require.NoError(t, provision(t, counted))
	quiet := &Handler{SecretKey: clerk.SecretKey(), APIURL: clerk.URL, DisableMetrics: true}
	require.NoError(t, provision(t, quiet))
	fetches := func() float64 { return testutil.ToFloat64(metrics.jwksFetches.WithLabelValues("success")) }
	calls := func() float64 { return testutil.ToFloat64(metrics.clerkRequests.WithLabelValues("/v1/jwks", "ok")) }
	verified := func() float64 {
		return testutil.ToFloat64(metrics.verifications.WithLabelValues("m2m_token", "jwt", "verified"))
	}
	misses := func() float64 { return testutil.ToFloat64(metrics.cacheLookups.WithLabelValues("jwt", "miss")) }
	fetchesBefore, callsBefore, verifiedBefore, missesBefore := fetches(), calls(), verified(), misses()

	_, err := through(t, quiet, "Bearer "+clerk.MintM2MJWT(caller, backendtest.JWTOptions{}))
	require.NoError(t, err)
	_, err = through(t, counted, "Bearer "+clerk.MintM2MJWT(caller, backendtest.JWTOptions{}))
	require.NoError(t, err)
	assert.Equal(t, 1, clerk.Calls("/v1/jwks"), "one key set for both handlers")
	assert.Equal(t, 1.0, fetches()-fetchesBefore, "the fetch the quiet handler's request made is counted")
	assert.Equal(t, 1.0, calls()-callsBefore, "and so is its call to Clerk")
	assert.Contains(t, keySetAgesReported(t), clerk.URL, "and the age of the keys")
	assert.Equal(t, 1.0, verified()-verifiedBefore, "only the counted handler's verification is counted")
	assert.Equal(t, 1.0, misses()-missesBefore, "and its cache lookup")

	require.NoError(t, counted.Cleanup())
	rotated := clerk.MintM2MJWT(caller, backendtest.JWTOptions{Header: map[string]any{"kid": "ins_rotated"}})
	_, err = through(t, quiet, "Bearer "+rotated)
	require.Error(t, err, "no such key")
	assert.Equal(t, 2, clerk.Calls("/v1/jwks"), "the unknown kid made the keys be fetched again")
	assert.Equal(t, 1.0, fetches()-fetchesBefore, "held by the quiet handler alone, the keys are no longer counted")
	assert.Equal(t, 1.0, calls()-callsBefore)
	assert.NotContains(t, keySetAgesReported(t), clerk.URL)
}

// TestResolvedCountersAreTheVecsChildren: a counter resolved once and kept
// is the child WithLabelValues gives, for two labels as for three.
func TestResolvedCountersAreTheVecsChildren(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_total"}, []string{"x", "y"})
	resolved := resolvedCounters{vec: vec}
	resolved.with("a", "b").Inc()
	resolved.with("a", "b").Inc()
	resolved.with("a", "c").Inc()
	assert.Equal(t, 2.0, testutil.ToFloat64(vec.WithLabelValues("a", "b")))
	assert.Equal(t, 1.0, testutil.ToFloat64(vec.WithLabelValues("a", "c")))
	assert.Same(t, resolved.with("a", "b"), vec.WithLabelValues("a", "b"))
	assert.Equal(t, 2, testutil.CollectAndCount(vec), "no other series")
}
