// Command instructions counts the machine instructions one request through
// clerk_m2m costs, under valgrind's callgrind. Unlike a clock, the count
// barely moves when other processes share the machine, so it can tell
// whether a change helps by a percent or two.
//
// For each scenario it runs itself under callgrind twice, serving -n and
// then 2×-n requests after the same setup, and reports the difference per
// request, so that the setup (keys, tokens, provisioning) cancels out.
// Requests go through the handler with the context Caddy's server gives
// them; pass-through is a handler that only calls the next one, the floor
// any handler pays; sha256-floor hashes the repeated JWT (what a lookup by
// SHA-256 costs) and rsa-floor checks the signature of each distinct JWT
// with crypto/rsa (what a never-seen JWT cannot do without), both on top
// of the pass-through request. Keys and tokens are made beforehand, outside
// callgrind, so that both runs read the very same ones.
//
// Callgrind's CPU has no SHA extensions, so SHA-256 runs the slower AVX2
// code here: hashing weighs more in these counts than on most servers.
//
//	go run ./bench/instructions                  # needs valgrind: apt-get install valgrind
//	go run ./bench/instructions -only jwt -n 5000
//
// To see where a scenario's instructions go:
//
//	go build -o /tmp/instructions ./bench/instructions
//	/tmp/instructions -write-material -material /tmp/material.json -n 2000
//	GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 GOGC=off valgrind --tool=callgrind \
//	    /tmp/instructions -child -scenario jwt -n 2000 -material /tmp/material.json
//	callgrind_annotate --inclusive=yes callgrind.out.*
package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var scenarios = []string{"pass-through", "jwt", "opaque", "distinct", "sha256-floor", "rsa-floor"}

func main() {
	child := flag.Bool("child", false, "serve requests (what runs under callgrind)")
	scenario := flag.String("scenario", "jwt", "the child's scenario")
	n := flag.Int("n", 2000, "requests of the shorter run; the longer serves twice as many")
	only := flag.String("only", "", "comma-separated scenarios (default: "+strings.Join(scenarios, ", ")+")")
	material := flag.String("material", "", "the child's keys and tokens")
	write := flag.Bool("write-material", false, "only write keys and tokens for 2×-n requests to -material, for profiling a child by hand")
	flag.Parse()
	var err error
	switch {
	case *child:
		err = serve(*scenario, *material, *n)
	case *write:
		err = makeMaterial(*material, 2**n)
	default:
		err = count(*only, *n)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "instructions:", err)
		os.Exit(1)
	}
}

// count runs every scenario under callgrind and prints instructions per
// request.
func count(only string, n int) error {
	if _, err := exec.LookPath("valgrind"); err != nil {
		return errors.New("valgrind is needed: apt-get install valgrind")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "clerk-m2m-instructions")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	material := filepath.Join(dir, "material.json")
	if err := makeMaterial(material, 2*n); err != nil {
		return err
	}
	selected := scenarios
	if only != "" {
		selected = strings.Split(only, ",")
	}
	fmt.Printf("instructions per request (callgrind, %d and %d requests)\n", n, 2*n)
	for _, sc := range selected {
		short, err := underCallgrind(self, dir, sc, material, n)
		if err != nil {
			return fmt.Errorf("%s: %v", sc, err)
		}
		long, err := underCallgrind(self, dir, sc, material, 2*n)
		if err != nil {
			return fmt.Errorf("%s: %v", sc, err)
		}
		fmt.Printf("%-14s %9.0f\n", sc, float64(long-short)/float64(n))
	}
	return nil
}

var collected = regexp.MustCompile(`Collected : (\d+)`)

// underCallgrind runs the child for one scenario and returns the
// instructions it executed. Go's asynchronous preemption signals upset
// callgrind; one thread keeps the count from depending on scheduling; and
// with the collector off, when a collection happens cannot move the count
// (what allocation costs is still counted, in the allocator; what it costs
// the collector later is not).
func underCallgrind(self, dir, scenario, material string, requests int) (int64, error) {
	cmd := exec.Command("valgrind", "--tool=callgrind", "--callgrind-out-file="+filepath.Join(dir, "callgrind.out"),
		self, "-child", "-scenario", scenario, "-material", material, "-n", strconv.Itoa(requests))
	cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1", "GOMAXPROCS=1", "GOGC=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v\n%s", err, out)
	}
	m := collected.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no instruction count in callgrind's output:\n%s", out)
	}
	return strconv.ParseInt(string(m[1]), 10, 64)
}

// material is what the child reads: the signing keys (a JWKS) to verify
// JWTs with, one JWT to repeat, and distinct JWTs, one for each request of
// the longer run.
type material struct {
	JWKS     json.RawMessage `json:"jwks"`
	Repeated string          `json:"repeated"`
	Distinct []string        `json:"distinct"`
}

// makeMaterial makes an RSA-2048 key and signs M2M JWTs with it, as Clerk
// would: the header and claims of a real one, valid for an hour.
func makeMaterial(path string, distinct int) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": keyID,
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
	}}})
	if err != nil {
		return err
	}
	m := material{JWKS: jwks}
	now := time.Now().Unix()
	sign := func(i int) (string, error) {
		return signJWT(key, map[string]any{
			"jti": fmt.Sprintf("mt_%032x", i), "sub": "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dk",
			"aud": []string{"mch_2xhFjEI5X2qWRvtV13BzSj8H6Dl"}, "scopes": "mch_2xhFjEI5X2qWRvtV13BzSj8H6Dl",
			"iss": "https://api.clerk.com", "iat": now, "nbf": now, "exp": now + 3600,
		})
	}
	if m.Repeated, err = sign(0); err != nil {
		return err
	}
	for i := 1; i <= distinct; i++ {
		token, err := sign(i)
		if err != nil {
			return err
		}
		m.Distinct = append(m.Distinct, token)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// keyID names the signing key, as Clerk names an instance's.
const keyID = "ins_2xhFjEI5X2qWRvtV13BzSj8H6Dk"

func signJWT(key *rsa.PrivateKey, claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": keyID, "cat": "cl_B7d4PD333AAA"})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signed))
	signature, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
	if err != nil {
		return "", err
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(signature), nil
}
