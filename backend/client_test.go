package backend

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const verifyAnswer = `{"object":"machine_to_machine_token","id":"mt_1","subject":"mch_1","scopes":["mch_2"],` +
	`"claims":{"foo":"bar"},"revoked":false,"revocation_reason":null,"expired":false,` +
	`"expiration":1753746916590,"last_used_at":null,"created_at":1753743316590,"updated_at":1753743316590}`

// fakeAPI serves handler and returns a client for it with the given keys.
func fakeAPI(t *testing.T, secretKey, machineKey string, handler http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	c, err := New(Options{URL: srv.URL + "/", SecretKey: secretKey, MachineSecretKey: machineKey, UserAgent: "test-agent/1"})
	require.NoError(t, err)
	return c
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func budget(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The calls a Client makes, each with a made-up credential.
var (
	verifyM2M    = func(ctx context.Context, c *Client) error { _, err := c.VerifyM2MToken(ctx, "mt_abc"); return err }
	fetchJWKS    = func(ctx context.Context, c *Client) error { _, err := c.JWKS(ctx); return err }
	verifyAPIKey = func(ctx context.Context, c *Client) error { _, err := c.VerifyAPIKey(ctx, "ak_x"); return err }
	verifyOAuth  = func(ctx context.Context, c *Client) error { _, err := c.VerifyOAuthToken(ctx, "oat_x"); return err }
	mint         = func(ctx context.Context, c *Client) error {
		_, err := c.CreateM2MToken(ctx, CreateM2MTokenOptions{})
		return err
	}
)

// TestNoRequestWithoutTheKeyACallNeeds: verifying an M2M token needs a
// key; the JWKS, API keys and OAuth tokens the instance key; minting a
// machine key.
func TestNoRequestWithoutTheKeyACallNeeds(t *testing.T) {
	for name, tc := range map[string]struct {
		secretKey, machineKey string
		call                  func(context.Context, *Client) error
	}{
		"M2M token": {"", "", verifyM2M},
		"JWKS":      {"", "ak_1", fetchJWKS},
		"API key":   {"", "ak_1", verifyAPIKey},
		"OAuth":     {"", "ak_1", verifyOAuth},
		"mint":      {"sk_test_1", "", mint},
	} {
		var calls atomic.Int32
		c := fakeAPI(t, tc.secretKey, tc.machineKey, func(http.ResponseWriter, *http.Request) { calls.Add(1) })
		require.Error(t, tc.call(budget(t, time.Second), c), name)
		assert.Zero(t, calls.Load(), "%s: no request is sent without the key", name)
	}
}

// TestAnswersOfTheWrongShapeAreClerkFailing: an answer that is not JSON,
// is too big, or is not the credential asked about is Clerk failing, not
// a verdict.
func TestAnswersOfTheWrongShapeAreClerkFailing(t *testing.T) {
	const js = "application/json"
	for name, tc := range map[string]struct {
		contentType, body string
		call              func(context.Context, *Client) error
	}{
		"M2M answer is an API key":        {js, `{"object":"api_key","id":"ak_1","subject":"user_1"}`, verifyM2M},
		"M2M answer without subject":      {js, `{"object":"machine_to_machine_token","id":"mt_1"}`, verifyM2M},
		"M2M answer without id":           {js, `{"object":"machine_to_machine_token","subject":"mch_1"}`, verifyM2M},
		"M2M answer cut short":            {js, `{"object":`, verifyM2M},
		"M2M answer not an object":        {js, `[1,2,3]`, verifyM2M},
		"api key answer is an M2M token":  {js, `{"object":"machine_to_machine_token","id":"mt_1","subject":"mch_1"}`, verifyAPIKey},
		"api key without subject":         {js, `{"object":"api_key","id":"ak_1"}`, verifyAPIKey},
		"oauth answer without object":     {js, `{"id":"oat_1","subject":"user_1"}`, verifyOAuth},
		"oauth active true but no object": {js, `{"active":true}`, verifyOAuth},
		"HTML":                            {"text/html", verifyAnswer, verifyM2M},
		"no content type":                 {"", verifyAnswer, verifyM2M},
		"broken content type":             {"application/json; charset", verifyAnswer, verifyM2M},
		"oversized":                       {js, `{"keys":[` + strings.Repeat(`{"kty":"RSA"},`, maxResponseBytes/10) + `{}]}`, fetchJWKS},
	} {
		t.Run(name, func(t *testing.T) {
			c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) {
				w.Header()["Content-Type"] = []string{tc.contentType}
				_, _ = io.WriteString(w, tc.body)
			})
			err := tc.call(budget(t, 5*time.Second), c)
			require.Error(t, err)
			assert.Equal(t, KindUnavailable, KindOf(err))
		})
	}
	c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, verifyAnswer)
	})
	assert.NoError(t, verifyM2M(budget(t, time.Second), c), "a charset parameter is fine")
}

func TestJWKS(t *testing.T) {
	var got *http.Request
	c := fakeAPI(t, "sk_test_1", "ak_1", func(w http.ResponseWriter, r *http.Request) {
		got = r
		writeJSON(w, 200, `{"keys":[{"kty":"RSA","kid":"ins_1"},{"kty":"EC"}]}`)
	})
	set, err := c.JWKS(budget(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, http.MethodGet, got.Method)
	assert.Equal(t, "/v1/jwks", got.URL.Path)
	assert.Equal(t, "Bearer sk_test_1", got.Header.Get("Authorization"), "JWKS is fetched with the instance key, never the machine key")
	assert.Len(t, set.Keys, 2)

	set, err = c.FrontendJWKS(budget(t, time.Second))
	require.NoError(t, err)
	assert.Len(t, set.Keys, 2)
	assert.Equal(t, "/.well-known/jwks.json", got.URL.Path)
	assert.Empty(t, got.Header.Get("Authorization"), "the Frontend API's JWKS is fetched with no secret")
}

func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   Kind
	}{
		{404, `{"errors":[{"code":"resource_not_found","message":"Not found"}]}`, KindNotFound},
		{404, `{}`, KindNotFound},
		{400, `{"errors":[{"code":"form_param_missing","message":"token missing"}]}`, KindBadRequest},
		{422, `{"errors":[{"code":"form_param_format_invalid","message":"bad"}]}`, KindBadRequest},
		{401, `{"errors":[{"code":"clerk_key_invalid","message":"bad key"}]}`, KindKeyRejected},
		{401, `{"errors":[{"code":"machine_secret_key_invalid","message":"bad key"}]}`, KindKeyRejected},
		{401, ``, KindKeyRejected},
		{403, `{"errors":[{"code":"token_not_granted","message":"no access"}]}`, KindNotFound},
		{429, `{"errors":[{"code":"too_many_requests","message":"slow down"}]}`, KindRateLimited},
		{500, `{"errors":[{"code":"internal_clerk_error","message":"oops"}]}`, KindUnavailable},
		{418, `teapot`, KindUnavailable},
		{302, ``, KindUnavailable},
	} {
		c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) {
			if tc.status == 302 {
				w.Header().Set("Location", "https://elsewhere.example/")
			}
			writeJSON(w, tc.status, tc.body)
		})
		_, err := c.VerifyM2MToken(budget(t, 2*time.Second), "mt_abc")
		require.Error(t, err, "status %d", tc.status)
		assert.Equal(t, tc.want, KindOf(err), "status %d body %s", tc.status, tc.body)
	}
}

func TestErrorDetails(t *testing.T) {
	c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Clerk-Trace-Id", "header-trace")
		w.Header().Set("Retry-After", "7")
		writeJSON(w, 429, `{"errors":[{"code":"too_many_requests","message":"Too many requests","long_message":"No token\nhere"}],"clerk_trace_id":"body-trace"}`)
	})
	_, err := c.VerifyM2MToken(budget(t, time.Second), "mt_secret_token_value")
	var apiErr *Error
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, 429, apiErr.Status)
	assert.Equal(t, KindRateLimited, apiErr.Kind())
	assert.Equal(t, 7*time.Second, apiErr.RetryAfter)
	assert.Equal(t, "too_many_requests", apiErr.Code)
	assert.Equal(t, "Too many requests", apiErr.Message)
	assert.Equal(t, "No tokenhere", apiErr.LongMessage, "control characters are dropped")
	assert.Equal(t, "body-trace", apiErr.TraceID, "the body's trace id wins")
	assert.NotContains(t, err.Error(), "mt_secret_token_value")
	assert.NotContains(t, err.Error(), "sk_test_1")
	assert.Contains(t, err.Error(), "body-trace")
}

func TestTraceIDFallsBackToHeaders(t *testing.T) {
	for header, value := range map[string]string{"Clerk-Trace-Id": "clerk-header", "CF-Ray": "8a1b2c3d-AMS"} {
		c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set(header, value)
			writeJSON(w, 404, `not json`)
		})
		_, err := c.VerifyM2MToken(budget(t, time.Second), "mt_abc")
		var apiErr *Error
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, value, apiErr.TraceID)
	}
}

// TestRetriesServerErrorsWithinBudget: a server error is retried, up to
// maxAttempts in all; a client error, a 429 or a 501 is not.
func TestRetriesServerErrorsWithinBudget(t *testing.T) {
	for _, tc := range []struct {
		statuses []int // Clerk's answers in turn, the last one repeated
		calls    int32
		budget   time.Duration
	}{
		{[]int{502, 502, 200}, 3, 5 * time.Second},
		{[]int{503}, maxAttempts, 10 * time.Second},
		{[]int{400}, 1, 5 * time.Second}, {[]int{401}, 1, 5 * time.Second}, {[]int{404}, 1, 5 * time.Second},
		{[]int{429}, 1, 5 * time.Second}, {[]int{501}, 1, 5 * time.Second},
	} {
		var calls atomic.Int32
		c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) {
			if status := tc.statuses[min(int(calls.Add(1)), len(tc.statuses))-1]; status != 200 {
				writeJSON(w, status, `{"errors":[{"code":"bad_gateway","message":"upstream"}]}`)
				return
			}
			writeJSON(w, 200, verifyAnswer)
		})
		_, err := c.VerifyM2MToken(budget(t, tc.budget), "mt_abc")
		if tc.statuses[len(tc.statuses)-1] == 200 {
			require.NoError(t, err)
		} else {
			require.Error(t, err, "statuses %v", tc.statuses)
			assert.Equal(t, tc.statuses[0] >= 500, KindOf(err) == KindUnavailable, "statuses %v", tc.statuses)
		}
		assert.Equal(t, tc.calls, calls.Load(), "statuses %v", tc.statuses)
	}
}

// neverDone has a deadline but never ends: the client learns of its budget
// only by reading the deadline, so a retry begun past it is seen rather
// than cut short.
type neverDone struct {
	context.Context
	deadline time.Time
}

func (c neverDone) Deadline() (time.Time, bool) { return c.deadline, true }

func TestNoRetryWhenBudgetIsSpent(t *testing.T) {
	var attempts atomic.Int32
	c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 500, `{}`)
	})
	// Attempts are counted as the client starts them: on a busy machine the
	// first may not even reach the server within the budget.
	c.observe = func(Attempt) { attempts.Add(1) }
	// Less than twice the shortest pause before a retry is left.
	ctx := neverDone{context.Background(), time.Now().Add(2*firstBackoff - time.Millisecond)}
	_, err := c.VerifyM2MToken(ctx, "mt_abc")
	require.Error(t, err)
	assert.Equal(t, int32(1), attempts.Load(), "a retry that cannot finish in the budget is not started")
}

func TestHangingClerkEndsWithTheBudget(t *testing.T) {
	release := make(chan struct{})
	c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	ended := make(chan error, 1)
	go func() {
		_, err := c.VerifyM2MToken(budget(t, 150*time.Millisecond), "mt_abc")
		ended <- err
	}()
	var err error
	select { // Clerk is released only when the test ends: the budget must end the call
	case err = <-ended:
	case <-time.After(time.Minute):
		t.Fatal("the call outlived its budget")
	}
	require.Error(t, err)
	assert.Equal(t, KindUnavailable, KindOf(err))
	assert.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for value, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-3":                            0,
		"12":                            12 * time.Second,
		" 5 ":                           5 * time.Second,
		"999999999999":                  maxRetryAfter,
		"soon":                          0,
		"Sun, 22 Nov 2026 12:00:30 GMT": 30 * time.Second,
		"Sun, 22 Nov 2026 11:00:00 GMT": 0,
		"Mon, 23 Nov 2026 12:00:00 GMT": maxRetryAfter,
	} {
		assert.Equal(t, want, ParseRetryAfter(value, now), "Retry-After %q", value)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	c := fakeAPI(t, "sk_test_1", "", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
	})
	_, err := c.VerifyM2MToken(budget(t, time.Second), "mt_abc")
	require.Error(t, err)
	assert.Zero(t, elsewhere.Load(), "the secret key must not follow a redirect")
}

func TestPathPrefixIsKept(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		writeJSON(w, 200, `{"keys":[]}`)
	}))
	defer srv.Close()
	c, err := New(Options{URL: srv.URL + "/clerk/", SecretKey: "sk_test_1"})
	require.NoError(t, err)
	_, err = c.JWKS(budget(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, "/clerk/v1/jwks", path)
}

func TestParseURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://api.clerk.com":          "https://api.clerk.com",
		"https://api.clerk.com/":         "https://api.clerk.com",
		"http://127.0.0.1:8080/prefix/":  "http://127.0.0.1:8080/prefix",
		"https://proxy.example.com/bapi": "https://proxy.example.com/bapi",
	} {
		got, err := ParseURL(raw)
		require.NoError(t, err, raw)
		assert.Equal(t, want, got)
	}
	for _, raw := range []string{
		"", "api.clerk.com", "ftp://api.clerk.com", "https://", "https://user:pw@api.clerk.com",
		"https://api.clerk.com/?x=1", "https://api.clerk.com/#frag", "https://api.clerk.com/?", "://bad",
	} {
		_, err := ParseURL(raw)
		assert.Error(t, err, "%q must be refused", raw)
	}
}

func TestErrorMessageIsReadable(t *testing.T) {
	err := &Error{Method: "POST", Path: "/m2m_tokens/verify", Status: 401, Code: "clerk_key_invalid", Message: "bad key", TraceID: "t1"}
	assert.Equal(t, "clerk backend API POST /m2m_tokens/verify: status 401, code clerk_key_invalid: bad key (trace id t1)", err.Error())
	assert.Equal(t, "key_rejected", err.Kind().String())
	wrapped := errors.Join(errors.New("context"), err)
	assert.Equal(t, KindKeyRejected, KindOf(wrapped))
	assert.Equal(t, KindUnavailable, KindOf(errors.New("plain")))
}

func TestObserveSeesEveryAttempt(t *testing.T) {
	var calls atomic.Int32
	var seen []Attempt
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch calls.Add(1) {
		case 1:
			writeJSON(w, 503, `{}`)
		case 2:
			writeJSON(w, 200, `garbage`)
		case 3:
			writeJSON(w, 429, `{}`)
		case 4:
			writeJSON(w, 404, `{}`)
		default:
			writeJSON(w, 200, verifyAnswer)
		}
	}))
	defer srv.Close()
	c, err := New(Options{URL: srv.URL, SecretKey: "sk_test_1", Observe: func(a Attempt) { seen = append(seen, a) }})
	require.NoError(t, err)
	for range 4 {
		_, _ = c.VerifyM2MToken(budget(t, 5*time.Second), "mt_abc")
	}
	var results []string
	for _, a := range seen {
		results = append(results, a.Result)
		assert.Equal(t, "/m2m_tokens/verify", a.Path)
		assert.Positive(t, a.Duration)
	}
	assert.Equal(t, []string{"server_error", "malformed", "rate_limited", "client_error", "ok"}, results,
		"the 503 was retried and its retry got garbage")

	unreachable, err := New(Options{URL: "http://127.0.0.1:1", SecretKey: "sk_test_1", Observe: func(a Attempt) { seen = append(seen, a) }})
	require.NoError(t, err)
	_, _ = unreachable.JWKS(budget(t, 50*time.Millisecond))
	assert.Equal(t, "unreachable", seen[len(seen)-1].Result)
	assert.Equal(t, "/v1/jwks", seen[len(seen)-1].Path)
}

func TestFingerprintNamesTheAPIAndTheKeys(t *testing.T) {
	client := func(url, secretKey, machineKey string) *Client {
		c, err := New(Options{URL: url, SecretKey: secretKey, MachineSecretKey: machineKey})
		require.NoError(t, err)
		return c
	}
	same := client("https://api.clerk.com/", "sk_test_1", "ak_1")
	assert.Equal(t, same.Fingerprint(), client("https://api.clerk.com", "sk_test_1", "ak_1").Fingerprint())
	for name, other := range map[string]*Client{
		"another API":         client("https://proxy.example.com", "sk_test_1", "ak_1"),
		"another secret key":  client("https://api.clerk.com", "sk_test_2", "ak_1"),
		"another machine key": client("https://api.clerk.com", "sk_test_1", "ak_2"),
		"keys moved about":    client("https://api.clerk.com", "sk_test_1ak_1", ""),
	} {
		assert.NotEqual(t, same.Fingerprint(), other.Fingerprint(), name)
	}
	assert.NotContains(t, same.Fingerprint(), "sk_test_1")
}

// TestHTTPClientBoundsConnectionsPerHost: with a bound of 2, a third
// call at the same time waits for a connection rather than open one.
func TestHTTPClientBoundsConnectionsPerHost(t *testing.T) {
	var open, peak atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		writeJSON(w, 200, verifyAnswer)
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			if n := open.Add(1); n > peak.Load() {
				peak.Store(n)
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := New(Options{URL: srv.URL, SecretKey: "sk_test_1", HTTPClient: NewHTTPClient(2)})
	require.NoError(t, err)
	done := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := c.VerifyM2MToken(budget(t, 10*time.Second), "mt_abc")
			done <- err
		}()
	}
	require.Eventually(t, func() bool { return open.Load() == 2 }, 5*time.Second, time.Millisecond)
	close(release)
	for range 3 {
		require.NoError(t, <-done)
	}
	assert.Equal(t, int32(2), peak.Load(), "the third call waited for a connection")
}
