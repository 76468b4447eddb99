package clerkm2m

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// Outcome labels of verifications that are not refusals; refusals are
// labelled with their reason (the {http.auth.clerk_m2m.error} values).
const (
	outcomeVerified  = "verified"
	outcomeAnonymous = "anonymous" // no credential, let through by optional
)

// metrics are the module's Prometheus collectors, made once per process and
// registered with the registry of every configuration that wants them
// (Caddy makes a new registry for each configuration), as Caddy's
// reverse_proxy does. No label ever holds a subject, a token or a path:
// each takes a handful of fixed values.
var metrics = newMetrics()

type moduleMetrics struct {
	verifications *prometheus.CounterVec
	clerkRequests *prometheus.CounterVec
	clerkLatency  *prometheus.HistogramVec
	cacheLookups  *prometheus.CounterVec
	sharedErrors  *prometheus.CounterVec
	jwksFetches   *prometheus.CounterVec
	jwksAge       keySetAges
	mints         *prometheus.CounterVec
}

func newMetrics() moduleMetrics {
	const namespace, subsystem = "caddy", "clerk_m2m"
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: subsystem, Name: name, Help: help}, labels)
	}
	return moduleMetrics{
		verifications: counter("verifications_total",
			"Credentials checked, by token type, format and outcome (verified, anonymous, or the refusal's reason).",
			"token_type", "token_format", "outcome"),
		clerkRequests: counter("clerk_requests_total", "HTTP requests to Clerk's Backend API, by endpoint and result.",
			"endpoint", "result"),
		clerkLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: subsystem, Name: "clerk_request_duration_seconds",
			Help:    "Duration of HTTP requests to Clerk's Backend API, by endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"endpoint"}),
		cacheLookups: counter("cache_lookups_total",
			"Lookups of verified credentials, by cache (jwt, opaque, shared) and result (hit, miss).", "cache", "result"),
		sharedErrors: counter("shared_cache_errors_total",
			"Failed operations of shared_cache on the storage, by operation (read: failed, slow, or an entry that failed "+
				"its check; write: failed or dropped; sweep).", "op"),
		jwksFetches: counter("jwks_fetches_total", "Fetches of Clerk's signing keys, by outcome (success, failure).",
			"outcome"),
		jwksAge: keySetAges{desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, subsystem, "jwks_age_seconds"),
			"Age of the signing keys in use (the oldest set, for each Clerk API they are fetched from).",
			[]string{"api_url"}, nil)},
		mints: counter("token_mints_total", "M2M tokens minted by clerk_m2m_token, by format and outcome (success, failure).",
			"token_format", "outcome"),
	}
}

// registerMetrics registers the collectors with a configuration's registry;
// a collector already there (another handler of the same configuration
// registered it) is fine.
func registerMetrics(registry *prometheus.Registry) error {
	for _, collector := range []prometheus.Collector{metrics.verifications, metrics.clerkRequests, metrics.clerkLatency,
		metrics.cacheLookups, metrics.sharedErrors, metrics.jwksFetches, metrics.jwksAge, metrics.mints} {
		if err := registry.Register(collector); err != nil {
			if already := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// observer is told what a handler does, for the caddy_clerk_m2m_* metrics.
// A handler builds one when it is provisioned: countingObserver when its
// metrics are on, quietObserver (which counts nothing) with
// disable_metrics. What handlers share is observed by the rule of sharers.
type observer interface {
	verification(tokenType verify.TokenType, format verify.Format, outcome string)
	cacheLookup(cache string, hit bool)
	sharedCacheError(op string)
	clerkRequest(backend.Attempt)
	jwksFetch(err error)
	mint(format string, err error)
}

// newObserver registers the collectors with the configuration's registry
// and returns the observer that counts, or, with metrics disabled, the one
// that does not.
func newObserver(ctx caddy.Context, disabled bool) (observer, error) {
	if disabled {
		return quietObserver{}, nil
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return nil, fmt.Errorf("registering metrics: %v", err)
	}
	return countingObserver{}, nil
}

// countingObserver counts in the module's collectors.
type countingObserver struct{}

func (countingObserver) verification(tokenType verify.TokenType, format verify.Format, outcome string) {
	verificationCounters.with(labelOrUnknown(string(tokenType)), labelOrUnknown(string(format)), outcome).Inc()
}

func (countingObserver) cacheLookup(cache string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	cacheLookupCounters.with(cache, result).Inc()
}

// Every request moves a verification counter and a cache lookup counter:
// their children are resolved once for each set of labels, and kept.
var (
	verificationCounters = resolvedCounters{vec: metrics.verifications}
	cacheLookupCounters  = resolvedCounters{vec: metrics.cacheLookups}
)

// resolvedCounters keeps the children of a CounterVec of up to three
// labels, each looked up by its label values once: WithLabelValues checks
// and hashes them, and takes a lock, on every call. The labels take a
// handful of fixed values (never a subject, a token or a path), so what is
// kept stays small, and is searched in order (comparing a few short
// strings, mostly the same constants, costs less than hashing them for a
// map); it is copied when it grows, so that reading it takes no lock.
type resolvedCounters struct {
	vec      *prometheus.CounterVec
	mu       sync.Mutex                        // held to add a child
	children atomic.Pointer[[]resolvedCounter] // in the order they were first used
}

// resolvedCounter is a child and its label values, unused ones empty.
type resolvedCounter struct {
	labels  [3]string
	counter prometheus.Counter
}

func (r *resolvedCounters) with(values ...string) prometheus.Counter {
	var labels [3]string
	copy(labels[:], values)
	if counter, ok := r.find(labels); ok {
		return counter
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if counter, ok := r.find(labels); ok { // added meanwhile
		return counter
	}
	var grown []resolvedCounter
	if children := r.children.Load(); children != nil {
		grown = slices.Clone(*children)
	}
	counter := r.vec.WithLabelValues(slices.Clone(values)...)
	grown = append(grown, resolvedCounter{labels, counter})
	r.children.Store(&grown)
	return counter
}

func (r *resolvedCounters) find(labels [3]string) (prometheus.Counter, bool) {
	if children := r.children.Load(); children != nil {
		for _, child := range *children {
			if child.labels == labels {
				return child.counter, true
			}
		}
	}
	return nil, false
}

func (countingObserver) sharedCacheError(op string) { metrics.sharedErrors.WithLabelValues(op).Inc() }

func (countingObserver) clerkRequest(attempt backend.Attempt) {
	metrics.clerkRequests.WithLabelValues(attempt.Path, attempt.Result).Inc()
	metrics.clerkLatency.WithLabelValues(attempt.Path).Observe(attempt.Duration.Seconds())
}

func (countingObserver) jwksFetch(err error) {
	metrics.jwksFetches.WithLabelValues(successOrFailure(err)).Inc()
}

func (countingObserver) mint(format string, err error) {
	metrics.mints.WithLabelValues(format, successOrFailure(err)).Inc()
}

// quietObserver counts nothing: the observer of disable_metrics.
type quietObserver struct{}

func (quietObserver) verification(verify.TokenType, verify.Format, string) {}
func (quietObserver) cacheLookup(string, bool)                             {}
func (quietObserver) sharedCacheError(string)                              {}
func (quietObserver) clerkRequest(backend.Attempt)                         {}
func (quietObserver) jwksFetch(error)                                      {}
func (quietObserver) mint(string, error)                                   {}

// labelOrUnknown names what could not be told (the type of a credential
// that is not one) "unknown".
func labelOrUnknown(value string) string {
	if value == "" {
		return "unknown"
	}
	return value
}

func successOrFailure(err error) string {
	if err != nil {
		return "failure"
	}
	return "success"
}

// keySetAges reports, when scraped, the age of the signing keys of every
// shared instance in use that is counted (see sharers).
type keySetAges struct {
	desc *prometheus.Desc
}

func (k keySetAges) Describe(ch chan<- *prometheus.Desc) { ch <- k.desc }

func (k keySetAges) Collect(ch chan<- prometheus.Metric) {
	oldest := map[string]float64{}
	now := time.Now()
	pool.Range(func(_, value any) bool {
		inst, ok := value.(*instance)
		if !ok || !inst.isCounted() {
			return true
		}
		for url, age := range inst.keysAge(now) {
			oldest[url] = max(oldest[url], age.Seconds())
		}
		return true
	})
	for keysURL, age := range oldest {
		ch <- prometheus.MustNewConstMetric(k.desc, prometheus.GaugeValue, age, keysURL)
	}
}
