package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// What the scenarios of Clerk's API budget share: how long a flood lasts,
// how many connections its one client opens, and the addresses Caddy takes
// from X-Forwarded-For for the flooding and the legitimate client (behind
// a proxy it trusts on the loopback, as the attack run had it).
const (
	floodFor         = 20 * time.Second
	floodConnections = 72
	flooderIP        = "203.0.113.66"
	legitimateIP     = "198.51.100.1"
	legitimateEvery  = 250 * time.Millisecond // the legitimate client's pace of new tokens
	trustTheLoopback = "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t\ttrusted_proxies_strict\n\t}\n"
)

// slowClerk is Clerk behind a proxy that adds 100 to 300 ms: it accepts
// the tokens that start with mt_valid_ and knows no other; above
// limitPerSecond calls in a second (0: no limit) it answers 429 with
// Retry-After: 1, as Clerk does past its limit. It counts the calls, and
// the 429s.
type slowClerk struct {
	*fakeClerk
	tooMany atomic.Int64
}

func startSlowClerk(limitPerSecond int64) (*slowClerk, error) {
	var mu sync.Mutex
	var second, thisSecond int64
	s := &slowClerk{}
	var err error
	s.fakeClerk, err = startClerk(func(ctx context.Context, token string) (int, []byte) {
		select {
		case <-time.After(time.Duration(100+mathrand.IntN(200)) * time.Millisecond):
		case <-ctx.Done():
		}
		mu.Lock()
		if now := time.Now().Unix(); now != second {
			second, thisSecond = now, 0
		}
		thisSecond++
		limited := limitPerSecond > 0 && thisSecond > limitPerSecond
		mu.Unlock()
		switch {
		case limited:
			s.tooMany.Add(1)
			return http.StatusTooManyRequests, []byte(`{"errors":[{"code":"too_many_requests"}]}`)
		case strings.HasPrefix(token, "mt_valid_"):
			return http.StatusOK, m2mAnswer(nil)
		}
		return http.StatusNotFound, []byte(`{"errors":[{"code":"resource_not_found"}]}`)
	})
	return s, err
}

// floodOutcome is what a flood did: the share of the legitimate client's
// new tokens accepted, and the calls Clerk saw a second.
type floodOutcome struct {
	accepted, sent int
	callsPerSecond float64
	tooMany        int64
}

// flood runs floodConnections clients of one address sending made-up
// opaque tokens (each given up after abandonAfter, unless 0) for
// floodFor, while another client sends a new valid token every
// legitimateEvery and waits for its answer.
func flood(c *caddy, clerk *slowClerk, abandonAfter time.Duration) floodOutcome {
	send := func(ctx context.Context, client *http.Client, from, token string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL()+"/", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ctx, stop := context.WithTimeout(context.Background(), floodFor)
	defer stop()
	callsBefore, tooManyBefore, start := clerk.calls.Load(), clerk.tooMany.Load(), time.Now()
	var flooders sync.WaitGroup
	for range floodConnections {
		flooders.Go(func() {
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for ctx.Err() == nil {
				request, cancel := ctx, context.CancelFunc(func() {})
				if abandonAfter > 0 {
					request, cancel = context.WithTimeout(ctx, abandonAfter)
				}
				send(request, client, flooderIP, "mt_"+rand.Text())
				cancel()
			}
		})
	}
	var out floodOutcome
	tick := time.NewTicker(legitimateEvery)
	defer tick.Stop()
	for ctx.Err() == nil {
		out.sent++
		if send(context.Background(), c.patient, legitimateIP, "mt_valid_"+rand.Text()) == http.StatusOK {
			out.accepted++
		}
		<-tick.C
	}
	flooders.Wait()
	elapsed := time.Since(start)
	out.callsPerSecond = float64(clerk.calls.Load()-callsBefore) / elapsed.Seconds()
	out.tooMany = clerk.tooMany.Load() - tooManyBefore
	return out
}

// gatewayBehindAProxy is the site of the flood scenarios: a gateway with
// the module's defaults and extra subdirectives, against clerk.
func gatewayBehindAProxy(binary string, clerk *slowClerk, extra string) (*caddy, error) {
	return startCaddyWith(binary, trustTheLoopback, "\tclerk_m2m {\n\t\tmachine_secret_key ak_bench\n\t\tapi_url "+clerk.url+
		"\n"+extra+"\t}\n\trespond \"through\"")
}

// oneClientFlood: findings 1 and 2 of the second attack run. One client
// floods made-up tokens from 72 connections, waiting for each answer or
// giving each up after 50 ms, while another sends new valid tokens; Clerk
// answers in 100 to 300 ms, without a limit of its own.
func oneClientFlood(abandonAfter time.Duration) scenario {
	name := "one-client flood"
	if abandonAfter > 0 {
		name += fmt.Sprintf(", each request given up after %v", abandonAfter)
	}
	return scenario{"flood", func(binary string, _ *rsa.PrivateKey, record func(row, value string)) error {
		clerk, err := startSlowClerk(0)
		if err != nil {
			return err
		}
		defer clerk.Close()
		c, err := gatewayBehindAProxy(binary, clerk, "")
		if err != nil {
			return err
		}
		defer c.Stop()
		out := flood(c, clerk, abandonAfter)
		record(name+": the other client's new tokens accepted", fmt.Sprintf("%d of %d (%.0f%%)", out.accepted, out.sent,
			100*float64(out.accepted)/float64(out.sent)))
		record(name+": calls to Clerk a second", fmt.Sprintf("%.0f", out.callsPerSecond))
		return nil
	}}
}

// clerkAt429 is finding 2 with Clerk's limit: Clerk answers 429 above 100
// calls a second; the flood as in oneClientFlood. With extra (say a
// max_clerk_rate above Clerk's limit), a binary that does not know it is
// not measured.
func clerkAt429(label, extra string) scenario {
	return scenario{"429", func(binary string, _ *rsa.PrivateKey, record func(row, value string)) error {
		clerk, err := startSlowClerk(100)
		if err != nil {
			return err
		}
		defer clerk.Close()
		c, err := gatewayBehindAProxy(binary, clerk, extra)
		name := "Clerk answering 429 above 100 calls a second" + label
		if err != nil && extra != "" {
			record(name+": calls to Clerk a second, and its 429s", "n/a (the binary does not load it)")
			return nil
		}
		if err != nil {
			return err
		}
		defer c.Stop()
		out := flood(c, clerk, 0)
		record(name+": calls to Clerk a second, and its 429s", fmt.Sprintf("%.0f, %d", out.callsPerSecond, out.tooMany))
		record(name+": the other client's new tokens accepted", fmt.Sprintf("%d of %d (%.0f%%)", out.accepted, out.sent,
			100*float64(out.accepted)/float64(out.sent)))
		return nil
	}}
}

// evictionByAnInsider: finding 3. 200 opaque tokens are verified, then
// presented again and again for 20 s while a machine of the instance
// cycles through 3,000 valid M2M JWTs of 15.5 KB that require_scopes
// refuses (403), their verdicts cached; the calls Clerk gets for the 200
// tokens already verified are what the JWTs' verdicts evicted.
func evictionByAnInsider() scenario {
	return scenario{"eviction", func(binary string, key *rsa.PrivateKey, record func(row, value string)) error {
		var warmCalls atomic.Int64
		clerk, err := startClerk(func(_ context.Context, token string) (int, []byte) {
			if strings.HasPrefix(token, "mt_warm_") {
				warmCalls.Add(1)
			}
			return http.StatusOK, m2mAnswer(nil)
		})
		if err != nil {
			return err
		}
		defer clerk.Close()
		pemFile, cleanup, err := writePublicKey(key)
		if err != nil {
			return err
		}
		defer cleanup()
		c, err := startCaddy(binary, "\tclerk_m2m {\n\t\tmachine_secret_key ak_bench\n\t\tjwt_key "+pemFile+"\n\t\tapi_url "+clerk.url+
			"\n\t\trequire_scopes mch_gateway\n\t\tcache_ttl 5m\n\t}\n\trespond \"through\"")
		if err != nil {
			return err
		}
		defer c.Stop()
		warm := make([]string, 200)
		for i := range warm {
			warm[i] = fmt.Sprintf("mt_warm_%03d_%s", i, rand.Text())
			if status := c.patientStatus(warm[i]); status != http.StatusOK {
				return fmt.Errorf("a warm token got %d", status)
			}
		}
		pad := strings.Repeat("x", 11<<10) // 15.5 KB once encoded and signed
		jwts := make([]string, 3000)
		for i := range jwts {
			jwts[i] = signJWT(key, pad, 10*time.Minute)
		}
		warmCalls.Store(0)
		ctx, stop := context.WithTimeout(context.Background(), floodFor)
		defer stop()
		var insider sync.WaitGroup
		var next atomic.Int64
		for range 8 {
			insider.Go(func() {
				for ctx.Err() == nil {
					c.status(jwts[next.Add(1)%int64(len(jwts))])
				}
			})
		}
		var refused, sent int
		for i := 0; ctx.Err() == nil; i++ {
			sent++
			if c.status(warm[i%len(warm)]) != http.StatusOK {
				refused++
			}
		}
		insider.Wait()
		record("an insider cycling 3,000 JWTs of 15.5 KB (403) for 20 s: calls to Clerk for 200 tokens verified before",
			fmt.Sprintf("%d (%d requests with them, %d refused)", warmCalls.Load(), sent, refused))
		return nil
	}}
}

// writePublicKey writes key's public half to a PEM file, for jwt_key.
func writePublicKey(key *rsa.PrivateKey) (string, func(), error) {
	dir, err := os.MkdirTemp("", "hardening-key-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	file := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		cleanup()
		return "", nil, err
	}
	return file, cleanup, nil
}
