// Command hardening runs, against Caddy binaries built from different
// checkouts, what an outsider (or a machine of the instance) can make a
// gateway spend: a burst of abandoned requests with new opaque tokens
// against a slow Clerk; verdicts that carry large claims; a one-client
// flood of made-up tokens while another client presents new valid ones,
// with Clerk answering 429 past its limit or not; large JWTs whose
// verdicts press on the cache of opaque ones; and what sits at a token's
// name in the storage of shared verdicts, and how fast sweeps empty that
// storage of expired verdicts (storage.go). It prints, for each binary,
// the calls and connections Clerk saw, what the other client got, and
// Caddy's goroutines, file descriptors and memory. It is a measurement,
// not a test: CI does not run it.
//
//	go build -o /tmp/caddy-new ./cmd/caddy
//	(cd ../main && go build -o /tmp/caddy-old ./cmd/caddy)
//	go run ./bench/hardening -caddy old=/tmp/caddy-old -caddy new=/tmp/caddy-new
//	go run ./bench/hardening -run 'flood|429|eviction' -caddy ...   # some of the scenarios
//
// Its fake Clerk is its own, so that the same program measures any
// version of the module.
package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/caddy-clerk/clerk-m2m/internal/caddyproc"
)

// binaries are the Caddy binaries to measure, by name.
type binaries [][2]string

func (b *binaries) String() string { return fmt.Sprint(*b) }

func (b *binaries) Set(value string) error {
	name, path, ok := strings.Cut(value, "=")
	if !ok {
		return fmt.Errorf("want name=path, not %q", value)
	}
	*b = append(*b, [2]string{name, path})
	return nil
}

// scenario is one measure, run on each binary: its name (for -run), and
// what it does, recording its rows.
type scenario struct {
	name string
	run  func(binary string, key *rsa.PrivateKey, record func(row, value string)) error
}

// scenarios are every measure, in the order they run.
var scenarios = []scenario{
	{"burst", abandonedBurst}, {"claims", bigOpaqueClaims}, {"jwts", bigJWTs(1000)}, {"jwts", bigJWTs(10000)},
	oneClientFlood(0), oneClientFlood(50 * time.Millisecond),
	clerkAt429("", ""), clerkAt429(", max_clerk_rate 500", "\t\tmax_clerk_rate 500\n"),
	evictionByAnInsider(), {"traps", trappedEntries}, {"sweep", sweepThroughput},
}

func main() {
	var caddies binaries
	flag.Var(&caddies, "caddy", "name=path of a Caddy binary with the module (repeat)")
	only := flag.String("run", "", "run only the scenarios whose name matches this regular expression: "+
		"burst, claims, jwts, flood, 429, eviction, traps, sweep")
	flag.Parse()
	if len(caddies) == 0 {
		log.Fatal("give at least one -caddy name=path")
	}
	selected, err := regexp.Compile(*only)
	if err != nil {
		log.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	results := map[string]map[string]string{}
	var rows []string
	record := func(binary, row, value string) {
		if results[row] == nil {
			results[row] = map[string]string{}
			rows = append(rows, row)
		}
		results[row][binary] = value
	}
	for _, c := range caddies {
		for _, s := range scenarios {
			if !selected.MatchString(s.name) {
				continue
			}
			if err := s.run(c[1], key, func(row, value string) { record(c[0], row, value) }); err != nil {
				log.Fatalf("%s: %s: %v", c[0], s.name, err)
			}
		}
	}
	out := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprint(out, "measure")
	for _, c := range caddies {
		fmt.Fprintf(out, "\t%s", c[0])
	}
	fmt.Fprintln(out)
	for _, row := range rows {
		fmt.Fprint(out, row)
		for _, c := range caddies {
			fmt.Fprintf(out, "\t%s", results[row][c[0]])
		}
		fmt.Fprintln(out)
	}
	out.Flush()
}

// fakeClerk answers POST /m2m_tokens/verify: answer says how, for a token;
// it counts the requests and connections it carries at once.
type fakeClerk struct {
	*http.Server
	url                    string
	requests, conns        atomic.Int64
	peakRequests, peakConn atomic.Int64
	calls, abandoned       atomic.Int64
}

func startClerk(answer func(ctx context.Context, token string) (int, []byte)) (*fakeClerk, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &fakeClerk{url: "http://" + ln.Addr().String()}
	raise := func(peak *atomic.Int64, n int64) {
		for old := peak.Load(); n > old && !peak.CompareAndSwap(old, n); old = peak.Load() {
		}
	}
	f.Server = &http.Server{
		ConnState: func(_ net.Conn, state http.ConnState) {
			switch state {
			case http.StateNew:
				raise(&f.peakConn, f.conns.Add(1))
			case http.StateClosed, http.StateHijacked:
				f.conns.Add(-1)
			}
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raise(&f.peakRequests, f.requests.Add(1))
			defer f.requests.Add(-1)
			f.calls.Add(1)
			var body struct{ Token string }
			_ = json.NewDecoder(r.Body).Decode(&body)
			status, answer := answer(r.Context(), body.Token)
			if r.Context().Err() != nil {
				f.abandoned.Add(1)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(status)
			_, _ = w.Write(answer)
		}),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = f.Serve(ln) }()
	return f, nil
}

// m2mAnswer is Clerk's answer about a valid token, with claims.
func m2mAnswer(claims map[string]string) []byte {
	data, _ := json.Marshal(map[string]any{
		"object": "machine_to_machine_token", "id": "mt_id", "subject": "mch_caller", "scopes": []string{"mch_gateway"},
		"claims": claims, "revoked": false, "expired": false,
		"expiration": time.Now().Add(time.Hour).UnixMilli(), "created_at": time.Now().UnixMilli(),
	})
	return data
}

// caddy is a Caddy process under measure.
type caddy struct {
	*caddyproc.Process
	patient *http.Client
}

// startCaddy runs binary with one site on loopback, handled by site.
func startCaddy(binary, site string) (*caddy, error) { return startCaddyWith(binary, "", site) }

// startCaddyWith runs binary with global options, and one site on
// loopback, handled by site.
func startCaddyWith(binary, globals, site string) (*caddy, error) {
	p, err := caddyproc.Run(caddyproc.Command{Binary: binary, Config: func(p caddyproc.Ports) ([]byte, error) {
		return fmt.Appendf(nil, "{\n\tadmin 127.0.0.1:%d\n\tdefault_bind 127.0.0.1\n\tlog {\n\t\tlevel ERROR\n\t}\n%s}\nhttp://127.0.0.1:%d {\n%s\n}\n",
			p.Admin, globals, p.HTTP, site), nil
	}})
	if err != nil {
		return nil, fmt.Errorf("%s: %v", binary, err)
	}
	return &caddy{Process: p, patient: &http.Client{Timeout: 60 * time.Second}}, nil
}

// status sends one request with the token and returns its status.
func (c *caddy) status(token string) int {
	req, _ := http.NewRequest(http.MethodGet, c.URL()+"/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.patient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// patientStatus sends one request with a new token, and again a second
// later while the answer is 503 (up to 30 times): one client's new tokens
// may meet its share of the calls to Clerk, and it tries again as
// Retry-After says.
func (c *caddy) patientStatus(token string) int {
	status := c.status(token)
	for tries := 0; status == http.StatusServiceUnavailable && tries < 30; tries++ {
		time.Sleep(time.Second)
		status = c.status(token)
	}
	return status
}

// usage is what the Caddy process holds.
type usage struct {
	goroutines, descriptors int
	heap                    uint64
}

// measure reads the process's goroutines (pprof), descriptors (/proc) and
// heap (pprof, after a collection when gc).
func (c *caddy) measure(gc bool) usage {
	var u usage
	if text, err := c.get("/debug/pprof/goroutine?debug=1"); err == nil {
		fmt.Sscanf(text, "goroutine profile: total %d", &u.goroutines)
	}
	if entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.Pid())); err == nil {
		u.descriptors = len(entries)
	}
	query := "/debug/pprof/heap?debug=1"
	if gc {
		query += "&gc=1"
	}
	if text, err := c.get(query); err == nil {
		for line := range strings.Lines(text) {
			if value, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
				u.heap, _ = strconv.ParseUint(value, 10, 64)
			}
		}
	}
	return u
}

func (c *caddy) get(path string) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(c.AdminURL() + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(bufio.NewReader(resp.Body))
	return string(data), err
}

// abandonedBurst: a Clerk that takes 4.5 s to answer, 100 clients that
// send 20 requests each with new opaque tokens and give each up after 50
// ms, and one request with a cached token in the midst of it.
func abandonedBurst(binary string, _ *rsa.PrivateKey, record func(row, value string)) error {
	clerk, err := startClerk(func(ctx context.Context, token string) (int, []byte) {
		if token == "mt_cached" {
			return http.StatusOK, m2mAnswer(nil)
		}
		select {
		case <-time.After(4500 * time.Millisecond):
		case <-ctx.Done():
		}
		return http.StatusNotFound, []byte(`{"errors":[{"code":"resource_not_found"}]}`)
	})
	if err != nil {
		return err
	}
	defer clerk.Close()
	c, err := startCaddy(binary, "\tclerk_m2m {\n\t\tmachine_secret_key ak_bench\n\t\tapi_url "+clerk.url+"\n\t}\n\trespond \"through\"")
	if err != nil {
		return err
	}
	defer c.Stop()
	if status := c.status("mt_cached"); status != http.StatusOK {
		return fmt.Errorf("the cached token got %d", status)
	}
	before := c.measure(true)
	clerk.peakConn.Store(clerk.conns.Load())
	clerk.peakRequests.Store(0)
	clerk.calls.Store(0)

	var most usage
	var mu sync.Mutex
	sampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for {
			u := c.measure(false)
			mu.Lock()
			most = usage{max(most.goroutines, u.goroutines), max(most.descriptors, u.descriptors), max(most.heap, u.heap)}
			mu.Unlock()
			select {
			case <-sampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	var burst sync.WaitGroup
	for range 100 {
		burst.Go(func() {
			client := &http.Client{Transport: &http.Transport{}}
			for range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL()+"/", nil)
				req.Header.Set("Authorization", "Bearer mt_"+rand.Text())
				if resp, err := client.Do(req); err == nil {
					resp.Body.Close()
				}
				cancel()
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // in the midst of the burst
	start := time.Now()
	cachedStatus := c.status("mt_cached")
	cachedTook := time.Since(start)
	burst.Wait()
	close(sampling)
	sampler.Wait()
	record("burst: calls in flight at Clerk, at most", fmt.Sprint(clerk.peakRequests.Load()))
	record("burst: connections open at Clerk, at most", fmt.Sprint(clerk.peakConn.Load()))
	record("burst: Caddy's goroutines, before / at most", fmt.Sprintf("%d / %d", before.goroutines, most.goroutines))
	record("burst: Caddy's file descriptors, before / at most", fmt.Sprintf("%d / %d", before.descriptors, most.descriptors))
	record("burst: Caddy's heap, before / at most", fmt.Sprintf("%.1f / %.1f MiB", mib(before.heap), mib(most.heap)))
	record("burst: a cached token meanwhile", fmt.Sprintf("%d in %v", cachedStatus, cachedTook.Round(time.Millisecond)))
	for deadline := time.Now().Add(10 * time.Second); clerk.requests.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	record("burst: calls Clerk saw, and how many of them given up", fmt.Sprintf("%d, %d", clerk.calls.Load(), clerk.abandoned.Load()))
	return nil
}

// bigOpaqueClaims: 400 opaque tokens whose answers carry 256 KiB of
// claims, reused for 3 s.
func bigOpaqueClaims(binary string, _ *rsa.PrivateKey, record func(row, value string)) error {
	answer := m2mAnswer(map[string]string{"blob": strings.Repeat("x", 256<<10)})
	clerk, err := startClerk(func(context.Context, string) (int, []byte) { return http.StatusOK, answer })
	if err != nil {
		return err
	}
	defer clerk.Close()
	c, err := startCaddy(binary, "\tclerk_m2m {\n\t\tmachine_secret_key ak_bench\n\t\tapi_url "+clerk.url+
		"\n\t\tcache_ttl 3s\n\t}\n\trespond \"through\"")
	if err != nil {
		return err
	}
	defer c.Stop()
	c.status("mt_warm")
	before := c.measure(true)
	var most uint64
	for i := range 400 {
		if status := c.patientStatus("mt_" + rand.Text()); status != http.StatusOK {
			return fmt.Errorf("a token got %d", status)
		}
		if i%50 == 49 {
			most = max(most, c.measure(true).heap)
		}
	}
	time.Sleep(4 * time.Second) // past cache_ttl
	c.status("mt_" + rand.Text())
	after := c.measure(true)
	record("400 verdicts with 256 KiB claims: heap before / at most / after expiry",
		fmt.Sprintf("%.1f / %.1f / %.1f MiB", mib(before.heap), mib(most), mib(after.heap)))
	return nil
}

// bigJWTs: n M2M JWTs of 14 KiB, valid for 5 s, that require_scopes
// refuses.
func bigJWTs(n int) func(string, *rsa.PrivateKey, func(string, string)) error {
	return func(binary string, key *rsa.PrivateKey, record func(row, value string)) error {
		pemFile, cleanup, err := writePublicKey(key)
		if err != nil {
			return err
		}
		defer cleanup()
		c, err := startCaddy(binary, "\tclerk_m2m {\n\t\tjwt_key "+pemFile+"\n\t\trequire_scopes mch_gateway\n\t\tclock_skew 0\n\t}\n\trespond \"through\"")
		if err != nil {
			return err
		}
		defer c.Stop()
		pad := strings.Repeat("x", 10<<10)
		c.status(signJWT(key, "", 5*time.Second))
		before := c.measure(true)
		var most uint64
		// Valid long enough for all of them to be sent.
		life := 5*time.Second + time.Duration(n)*3*time.Millisecond
		expiry := time.Now().Add(life)
		for i := range n {
			if status := c.status(signJWT(key, pad, life)); status != http.StatusForbidden {
				return fmt.Errorf("a JWT got %d", status)
			}
			if i%(n/10) == n/10-1 {
				most = max(most, c.measure(true).heap)
			}
		}
		time.Sleep(time.Until(expiry) + time.Second)
		c.status(signJWT(key, "", 5*time.Second))
		after := c.measure(true)
		record(fmt.Sprintf("%d JWTs of 14 KiB refused 403: heap before / at most / after expiry", n),
			fmt.Sprintf("%.1f / %.1f / %.1f MiB", mib(before.heap), mib(most), mib(after.heap)))
		return nil
	}
}

// signJWT signs an M2M JWT valid for life, whose scopes do not name the
// gateway, with a pad claim.
func signJWT(key *rsa.PrivateKey, pad string, life time.Duration) string {
	now := time.Now().Unix()
	header, _ := json.Marshal(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "ins_bench", "cat": "cl_B7d4PD333AAA"})
	payload, _ := json.Marshal(map[string]any{"sub": "mch_caller", "scopes": "mch_elsewhere", "jti": "mt_" + rand.Text(),
		"iat": now, "nbf": now, "exp": now + int64(life/time.Second), "pad": pad})
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signed))
	signature, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(signature)
}

func mib(bytes uint64) float64 { return float64(bytes) / (1 << 20) }
