// Package backend is a small client for the parts of Clerk's API that a
// gateway needs: verifying opaque credentials (M2M tokens, API keys, OAuth
// access tokens) and fetching the instance's signing keys (JWKS) through the
// Backend API (BAPI), minting M2M tokens for a machine, and fetching the
// public JWKS of the Frontend API that a publishable key names.
//
// It knows Clerk's HTTP API (paths, headers, which secret authenticates which
// endpoint, JSON shapes, error bodies) and nothing of the rules that decide
// whether a token is acceptable; those live in package verify.
//
// Every call takes a context whose deadline is the whole budget of the call,
// retries included. Failures are returned as *Error, which tells "Clerk does
// not know this token" from "Clerk rejected our key" from "Clerk is in
// trouble" (see Kind).
package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// DefaultURL is the Backend API of Clerk's production service.
	DefaultURL = "https://api.clerk.com"

	// APIVersion is the dated Backend API version this client speaks,
	// sent as the Clerk-API-Version header (the one Clerk's JS SDK sends).
	APIVersion = "2026-05-12"

	// maxResponseBytes bounds how much of an answer is read: verify answers
	// and key sets are a few KiB, so anything larger is not Clerk.
	maxResponseBytes = 1 << 20

	// maxAttempts bounds retries of a call that failed in a retryable way.
	maxAttempts = 3

	// firstBackoff is the pause before the first retry; it doubles after
	// each attempt and is jittered so that gateways do not retry in step.
	firstBackoff = 50 * time.Millisecond
)

// Options configures a Client.
type Options struct {
	// URL is the base of the Backend API, such as DefaultURL or a proxy in
	// front of it. It may carry a path prefix.
	URL string

	// SecretKey is the instance secret key (sk_live_… / sk_test_…). It
	// authenticates JWKS fetches, and M2M token verification when no
	// MachineSecretKey is set.
	SecretKey string

	// MachineSecretKey is the secret key of one machine (ak_…). When set,
	// it authenticates M2M token verification, and Clerk then only verifies
	// tokens that were granted access to that machine.
	MachineSecretKey string

	// UserAgent is sent with every request.
	UserAgent string

	// HTTPClient makes the requests; nil means a client tuned for many
	// concurrent short calls to one host (see NewHTTPClient).
	HTTPClient *http.Client

	// Observe, if set, is told of every HTTP request made (each attempt of
	// a retried call), for metrics. It must be quick.
	Observe func(Attempt)
}

// Attempt is one HTTP request to the Backend API.
type Attempt struct {
	Path     string        // such as "/m2m_tokens/verify"
	Result   string        // see resultOf
	Duration time.Duration // until the answer was read, or the request failed
}

// Client calls Clerk's Backend API. It is safe for concurrent use.
type Client struct {
	baseURL          string
	secretKey        string
	machineSecretKey string
	fingerprint      string
	userAgent        string
	httpClient       *http.Client
	observe          func(Attempt)
}

// New checks opts and returns a Client. It makes no network call.
func New(opts Options) (*Client, error) {
	base, err := ParseURL(opts.URL)
	if err != nil {
		return nil, err
	}
	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = NewHTTPClient(0)
	}
	return &Client{
		baseURL:          base,
		secretKey:        opts.SecretKey,
		machineSecretKey: opts.MachineSecretKey,
		fingerprint:      fingerprint(base, opts.SecretKey, opts.MachineSecretKey),
		userAgent:        opts.UserAgent,
		httpClient:       httpClient,
		observe:          opts.Observe,
	}, nil
}

// Fingerprint names the API the client calls and the keys it calls it with,
// hashed (no key can be read back from it): clients with the same
// fingerprint get the same answers from Clerk, so that what one learned,
// another may reuse.
func (c *Client) Fingerprint() string { return c.fingerprint }

func fingerprint(parts ...string) string {
	h := sha256.New()
	for _, part := range parts {
		fmt.Fprintf(h, "%d:%s,", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ParseURL checks that raw is an absolute http or https URL with a host and
// no query, fragment or credentials, and returns it without a trailing slash.
// Its errors never quote raw, which may hold a credential: in its user info,
// in a query, or, once mangled, in what url.Parse reads as a port or an
// escape and quotes in its own errors.
func ParseURL(raw string) (string, error) {
	invalid := func(why string) error {
		return errors.New("invalid Backend API URL (not shown: it may hold a credential): " + why)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", invalid("it does not parse as a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", invalid("the scheme must be https (or http)")
	case u.Host == "":
		return "", invalid("no host")
	case u.User != nil:
		return "", invalid("credentials in the URL are not allowed")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", invalid("no query or fragment allowed")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// NewHTTPClient returns an HTTP client for calls to one Clerk host: keep-alive
// with enough idle connections that a burst of concurrent verifications does
// not open (and TLS-handshake) a connection per call, and at most
// maxConnsPerHost connections to one host, idle ones included (0: no
// bound), so that however many calls are made at once, the connections
// and descriptors they hold are bounded too; a call beyond it waits for a
// connection, within its deadline. It has no overall timeout because every
// call carries its own deadline.
func NewHTTPClient(maxConnsPerHost int) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 256
	transport.MaxIdleConnsPerHost = 64
	if maxConnsPerHost > 0 {
		transport.MaxConnsPerHost = maxConnsPerHost
		transport.MaxIdleConnsPerHost = min(transport.MaxIdleConnsPerHost, maxConnsPerHost)
	}
	transport.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport: transport,
		// Clerk does not redirect API calls; following one could send the
		// secret key somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// do sends one API call, retrying network failures and 5xx answers (up to
// attempts tries in all) while the context's budget allows, and decodes a
// 2xx JSON answer into out.
func (c *Client) do(ctx context.Context, method, path, key string, body, out any, attempts int) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return &Error{Method: method, Path: path, Err: err}
		}
	}
	backoff := firstBackoff
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := c.attempt(ctx, method, path, key, payload, out)
		if c.observe != nil {
			c.observe(Attempt{Path: path, Result: resultOf(err), Duration: time.Since(start)})
		}
		if err == nil || attempt >= attempts || !err.retryable() {
			if err == nil {
				return nil
			}
			return err
		}
		pause := jitter(backoff)
		if !fitsBudget(ctx, pause) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		backoff *= 2
	}
}

// attempt makes one HTTP request and reads its answer.
func (c *Client) attempt(ctx context.Context, method, path, key string, payload []byte, out any) *Error {
	fail := func(status int, err error) *Error {
		return &Error{Method: method, Path: path, Status: status, Err: err}
	}
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, body)
	if err != nil {
		return fail(0, err)
	}
	c.setHeaders(req, key)
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return fail(0, scrubURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fail(resp.StatusCode, fmt.Errorf("reading the answer: %w", scrubURLError(err)))
	}
	if len(data) > maxResponseBytes {
		return fail(resp.StatusCode, fmt.Errorf("answer larger than %d bytes", maxResponseBytes))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return parseError(method, path, resp, data)
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return fail(resp.StatusCode, fmt.Errorf("answer has Content-Type %q, not application/json", resp.Header.Get("Content-Type")))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fail(resp.StatusCode, fmt.Errorf("malformed answer: %v", err))
	}
	return nil
}

func (c *Client) setHeaders(req *http.Request, key string) {
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Clerk-API-Version", APIVersion)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
}

// isJSON reports whether a Content-Type names JSON (parameters such as a
// charset are allowed).
func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && mediaType == "application/json"
}

// scrubURLError drops the request URL from transport errors: it is not
// secret, but keeping errors short and uniform makes logs easier to read.
func scrubURLError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err
	}
	return err
}

// resultOf classes an attempt, in a few words fit for a metric label:
// "ok", "unreachable" (no answer: network error or timeout), "malformed"
// (a 2xx that is not the expected JSON), "rate_limited" (429),
// "client_error" (another 4xx: unknown credential, rejected key...),
// "server_error" (5xx) or "unexpected" (anything else, such as a redirect).
func resultOf(err *Error) string {
	switch {
	case err == nil:
		return "ok"
	case err.Status == 0:
		return "unreachable"
	case err.Status >= 200 && err.Status < 300:
		return "malformed"
	case err.Status == http.StatusTooManyRequests:
		return "rate_limited"
	case err.Status >= 400 && err.Status < 500:
		return "client_error"
	case err.Status >= 500:
		return "server_error"
	default:
		return "unexpected"
	}
}

// fitsBudget reports whether pausing for d still leaves time for another
// attempt before the context's deadline.
func fitsBudget(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) > 2*d
}

func jitter(d time.Duration) time.Duration {
	return d + rand.N(d)
}
