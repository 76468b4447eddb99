package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// site is one of Caddy's sites, each on a port of its own.
type site string

const (
	bareSite  site = "bare"      // respond only
	clerkSite site = "clerk_m2m" // clerk_m2m, then respond
	floorSite site = "floor"     // the floor (package floor), then respond
	manySite  site = "many"      // clerk_m2m with a cache that keeps every caller's verdict, then respond
	peerSite  site = "peer"      // the peer's JWT authentication, then respond
)

// table names a file of Authorization header values, one per request.
type table string

const (
	opaqueTable   table = "opaque"   // one opaque M2M token, on every line
	jwtTable      table = "jwt"      // one M2M JWT, on every line
	distinctTable table = "distinct" // a different M2M JWT on every line
	callersTable  table = "callers"  // a different opaque M2M token on every line
)

// scenario is one kind of traffic: the site it goes to and the table its
// requests come from.
type scenario struct {
	name, description string
	site              site
	table             table
	// baseline names the scenario this one is a ratio to: bare Caddy with
	// headers of the same length. Empty for the first baseline.
	baseline string
	// floor and peer name the floor's and the peer's scenarios with the
	// same traffic, for the module's scenarios they apply to.
	floor, peer string
	// cache is what the module's cache of verified credentials must answer
	// to this scenario's requests.
	cache cacheExpectation
	// filled: the site's cache must hold the verdict on every line of the
	// table before the first run (see environment.fill).
	filled bool
}

// cacheExpectation is a cache ("jwt" or "opaque") and the answer ("hit" or
// "miss") it must give nearly every request of a scenario.
type cacheExpectation struct{ cache, result string }

// comparedWith names the scenarios this one's figures are taken against.
func (sc scenario) comparedWith() []string {
	var names []string
	for _, name := range []string{sc.baseline, sc.floor, sc.peer} {
		if name != "" {
			names = append(names, name)
		}
	}
	return names
}

// builtIn says which of the modules compared, beside clerk_m2m, the Caddy
// under test has.
type builtIn struct{ floor, peer bool }

func allScenarios(with builtIn) []scenario {
	scenarios := []scenario{
		{name: "bare-opaque", description: "bare `respond`, opaque-token header", site: bareSite, table: opaqueTable},
		{name: "bare-jwt", description: "bare `respond`, JWT header", site: bareSite, table: distinctTable,
			baseline: "bare-opaque"},
		{name: "jwt", description: "`clerk_m2m`, one M2M JWT repeated", site: clerkSite, table: jwtTable,
			baseline: "bare-jwt", peer: "peer-jwt", cache: cacheExpectation{"jwt", "hit"}},
		{name: "distinct", description: "`clerk_m2m`, distinct M2M JWTs, each verified", site: clerkSite, table: distinctTable,
			baseline: "bare-jwt", floor: "floor", peer: "peer-distinct", cache: cacheExpectation{"jwt", "miss"}},
		{name: "opaque", description: "`clerk_m2m`, one opaque M2M token repeated", site: clerkSite, table: opaqueTable,
			baseline: "bare-opaque", cache: cacheExpectation{"opaque", "hit"}},
		{name: "many-jwt", description: "`clerk_m2m`, many callers: distinct M2M JWTs, each seen before", site: manySite, table: distinctTable,
			baseline: "bare-jwt", cache: cacheExpectation{"jwt", "hit"}, filled: true},
		{name: "many-opaque", description: "`clerk_m2m`, many callers: distinct opaque M2M tokens, each seen before", site: manySite, table: callersTable,
			baseline: "bare-opaque", cache: cacheExpectation{"opaque", "hit"}, filled: true},
	}
	if with.floor {
		scenarios = append(scenarios,
			scenario{name: "floor", description: "the floor: distinct M2M JWTs, their signature checked", site: floorSite, table: distinctTable,
				baseline: "bare-jwt"})
	}
	if with.peer {
		scenarios = append(scenarios,
			scenario{name: "peer-jwt", description: "caddy-jwt, one M2M JWT repeated", site: peerSite, table: jwtTable,
				baseline: "bare-jwt"},
			scenario{name: "peer-distinct", description: "caddy-jwt, distinct M2M JWTs", site: peerSite, table: distinctTable,
				baseline: "bare-jwt"})
	}
	for i := range scenarios {
		if !with.floor {
			scenarios[i].floor = ""
		}
		if !with.peer {
			scenarios[i].peer = ""
		}
	}
	return scenarios
}

func scenarioNamed(scenarios []scenario, name string) (scenario, bool) {
	for _, sc := range scenarios {
		if sc.name == name {
			return sc, true
		}
	}
	return scenario{}, false
}

// writeTables mints the tokens and writes one file per table, each of size
// lines, so that wrk loads and formats the same number of requests in
// every scenario.
func writeTables(dir string, clerk *backendtest.Server, gateway *backendtest.Machine, size int) (map[table]string, error) {
	caller := clerk.NewMachine("caller")
	granted := backendtest.TokenOptions{Scopes: []string{gateway.ID}, TTL: 2 * time.Hour}
	mintJWT := func() string { return clerk.MintM2MJWT(caller, backendtest.JWTOptions{TokenOptions: granted}) }
	mintOpaque := func() string {
		token, _ := clerk.CreateM2MToken(caller, granted)
		return token
	}
	lines := map[table][]string{
		opaqueTable:   repeated(mintOpaque(), size),
		jwtTable:      repeated(mintJWT(), size),
		distinctTable: mintConcurrently(size, mintJWT),
		callersTable:  mintConcurrently(size, mintOpaque),
	}
	files := map[table]string{}
	for name, tokens := range lines {
		files[name] = filepath.Join(dir, string(name)+".tokens")
		if err := os.WriteFile(files[name], []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func repeated(token string, n int) []string {
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = token
	}
	return tokens
}

func mintConcurrently(n int, mint func() string) []string {
	tokens := make([]string, n)
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				tokens[i] = mint()
			}
		})
	}
	wg.Wait()
	return tokens
}
