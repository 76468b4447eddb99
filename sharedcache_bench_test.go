package clerkm2m

import (
	"context"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-clerk/clerk-m2m/backend"
	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/verify"
)

// The miss path of an opaque token: a gateway that has not seen the token
// asks Clerk (the fake, over loopback), or, with shared_cache, finds the
// verdict another gateway wrote in a file_system storage. Each iteration
// is a gateway that has not seen the token (a Verifier with an empty
// memory, made before the timer starts).

func BenchmarkOpaqueMissAsksClerk(b *testing.B) { benchOpaqueMiss(b, false) }

func BenchmarkOpaqueMissReadsSharedCache(b *testing.B) { benchOpaqueMiss(b, true) }

func benchOpaqueMiss(b *testing.B, shared bool) {
	clerk := backendtest.New()
	b.Cleanup(clerk.Close)
	client, err := backend.New(backend.Options{URL: clerk.URL, SecretKey: clerk.SecretKey()})
	if err != nil {
		b.Fatal(err)
	}
	token, _ := clerk.CreateM2MToken(clerk.NewMachine("caller"), backendtest.TokenOptions{})
	storage := &certmagic.FileStorage{Path: b.TempDir()}
	cache := verify.NewSharedCache(storageVerdicts{storage}, verify.SharedCacheOptions{
		OnError: func(op string, err error) { b.Errorf("%s: %v", op, err) },
	})
	gateway := func() (*verify.Verifier, *verify.Shared) {
		memory := verify.NewShared(verify.SharedOptions{})
		opts := verify.Options{Accept: []verify.TokenType{verify.M2MToken}, Backend: client, CacheTTL: time.Hour, Shared: memory}
		if shared {
			opts.SharedCache, opts.SharedCacheSecret = cache, sharedCacheSecret(clerk.SecretKey(), "")
		}
		return verify.New(opts), memory
	}
	verifyOnce := func(v *verify.Verifier) {
		if _, err := v.Verify(context.Background(), token); err != nil {
			b.Fatal(err)
		}
	}
	first, _ := gateway()
	verifyOnce(first) // the first gateway asks Clerk, and shares the verdict
	if shared {
		waitForSharedVerdict(b, storage)
	}
	gateways := make([]*verify.Verifier, b.N)
	for i := range gateways {
		var memory *verify.Shared
		gateways[i], memory = gateway()
		defer memory.Close()
	}
	clerk.ResetCalls()
	b.ReportAllocs()
	b.ResetTimer()
	for _, v := range gateways {
		verifyOnce(v)
	}
	b.StopTimer()
	b.ReportMetric(float64(clerk.Calls("/m2m_tokens/verify"))/float64(b.N), "clerk-calls/op")
}

// waitForSharedVerdict waits until the storage holds a verdict: they are
// written in the background.
func waitForSharedVerdict(b *testing.B, storage certmagic.Storage) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		keys, _ := storage.List(context.Background(), verdictsPrefix, true)
		for _, key := range keys {
			if isVerdictKey(key) {
				return
			}
		}
	}
	b.Fatal("no verdict was shared")
}
