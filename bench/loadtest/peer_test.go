package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
)

// peerStandIn takes the peer's place in the tests: a provider under the
// peer's module ID with the JSON fields of caddy-jwt v1.1.1's JWTAuth, and
// no others, which Caddy decodes strictly. It keeps the last one
// provisioned, for the test to read.
type peerStandIn struct {
	SignKey           string            `json:"sign_key"`
	JWKURL            string            `json:"jwk_url"`
	SignAlgorithm     string            `json:"sign_alg"`
	SkipVerification  bool              `json:"skip_verification"`
	FromQuery         []string          `json:"from_query"`
	FromHeader        []string          `json:"from_header"`
	FromCookies       []string          `json:"from_cookies"`
	IssuerWhitelist   []string          `json:"issuer_whitelist"`
	AudienceWhitelist []string          `json:"audience_whitelist"`
	UserClaims        []string          `json:"user_claims"`
	MetaClaims        map[string]string `json:"meta_claims"`
}

var provisionedPeer *peerStandIn

func init() { caddy.RegisterModule(peerStandIn{}) }

func (peerStandIn) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: peerModule, New: func() caddy.Module { return new(peerStandIn) }}
}

func (p *peerStandIn) Provision(caddy.Context) error {
	provisionedPeer = p
	return nil
}

func (p *peerStandIn) Authenticate(http.ResponseWriter, *http.Request) (caddyauth.User, bool, error) {
	return caddyauth.User{}, false, nil
}

// TestPeerConfigLoads loads the config with the peer's server into Caddy:
// the peer gets the fake Clerk's public key, RS256 and "sub" as the user,
// in fields it has.
func TestPeerConfigLoads(t *testing.T) {
	var cfg caddy.Config
	if err := json.Unmarshal(adaptedConfig(t), &cfg); err != nil {
		t.Fatal(err)
	}
	provisionedPeer = nil
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatal(err)
	}
	p := provisionedPeer
	if p == nil {
		t.Fatal("the peer was not provisioned")
	}
	if !strings.HasPrefix(p.SignKey, "-----BEGIN PUBLIC KEY-----") || p.SignAlgorithm != "RS256" || !slices.Equal(p.UserClaims, []string{"sub"}) {
		t.Errorf("the peer got sign_key %.30q…, sign_alg %q, user_claims %q", p.SignKey, p.SignAlgorithm, p.UserClaims)
	}
	if len(p.FromHeader) != 0 {
		t.Errorf("the peer is told to read %q besides Authorization, which it reads anyway", p.FromHeader)
	}
}

// TestPeerServerRoute checks the peer's route: authentication, then the
// response every site gives.
func TestPeerServerRoute(t *testing.T) {
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Handler string `json:"handler"`
							Body    string `json:"body"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adaptedConfig(t), &cfg); err != nil {
		t.Fatal(err)
	}
	routes := cfg.Apps.HTTP.Servers[peerName].Routes
	if len(routes) != 1 || len(routes[0].Handle) != 2 ||
		routes[0].Handle[0].Handler != "authentication" || routes[0].Handle[1].Body != "ok" {
		t.Errorf("the peer's routes are %+v", routes)
	}
}

func TestAddServersNeedsServers(t *testing.T) {
	peer := map[string]any{peerName: jsonSite(2003, peerHandler("pem"))}
	if _, err := addServers([]byte(`{"apps":{}}`), peer); err == nil {
		t.Error("the peer was added to a config with no HTTP servers")
	}
	if _, err := addServers([]byte(`{"apps":{"http":{"servers":{"peer":{}}}}}`), peer); err == nil {
		t.Error("the peer replaced a server of the same name")
	}
}

// TestAddServersKeepsDurations: Caddy reads a duration written as a
// number only as an integer, so 1e+09 would not load.
func TestAddServersKeepsDurations(t *testing.T) {
	out, err := addServers([]byte(`{"apps":{"http":{"grace_period":1000000000,"servers":{}}}}`),
		map[string]any{peerName: jsonSite(2003, peerHandler("pem"))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"grace_period":1000000000`) {
		t.Errorf("the grace period was rewritten: %s", out)
	}
}

// TestBuildModuleWithPeerSource writes the build module with a peer
// source: the peer is required at its version, replaced by the directory
// (made absolute), and imported; nothing is fetched.
func TestBuildModuleWithPeerSource(t *testing.T) {
	source := t.TempDir()
	if err := os.WriteFile(filepath.Join(source, "go.mod"), []byte("module github.com/ggicci/caddy-jwt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	build := filepath.Join(t.TempDir(), "build")
	withPeer, err := writeBuildModule(build, "/checkout", "github.com/ggicci/caddy-jwt@v1.1.1", source)
	if err != nil {
		t.Fatal(err)
	}
	if !withPeer {
		t.Error("the peer from source is said to be missing")
	}
	var mod struct {
		Require []struct{ Path, Version string }
		Replace []struct {
			Old, New struct{ Path, Version string }
		}
	}
	out, err := exec.Command("go", "mod", "edit", "-json", filepath.Join(build, "go.mod")).Output()
	if err != nil {
		t.Fatalf("go mod edit: %v\n%s", err, stderrOf(err))
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	required := map[string]string{}
	for _, r := range mod.Require {
		required[r.Path] = r.Version
	}
	if required["github.com/ggicci/caddy-jwt"] != "v1.1.1" {
		t.Errorf("the peer is required as %v", mod.Require)
	}
	replaced := map[string]string{}
	for _, r := range mod.Replace {
		replaced[r.Old.Path] = r.New.Path
	}
	if replaced["github.com/ggicci/caddy-jwt"] != source || replaced[modulePath] != "/checkout" {
		t.Errorf("replacements %v", mod.Replace)
	}
	main, err := os.ReadFile(filepath.Join(build, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(main), `_ "github.com/ggicci/caddy-jwt"`) {
		t.Errorf("main.go does not import the peer:\n%s", main)
	}
}

// TestBuildModuleWithoutPeer: without a peer, the build has the module
// and the floor, whose source is this checkout's whichever checkout the
// module comes from.
func TestBuildModuleWithoutPeer(t *testing.T) {
	build := filepath.Join(t.TempDir(), "build")
	withPeer, err := writeBuildModule(build, "/checkout", "", "")
	if err != nil || withPeer {
		t.Fatalf("withPeer %v, err %v", withPeer, err)
	}
	main, _ := os.ReadFile(filepath.Join(build, "main.go"))
	goMod, _ := os.ReadFile(filepath.Join(build, "go.mod"))
	if strings.Contains(string(main), "caddy-jwt") || strings.Contains(string(goMod), "caddy-jwt") {
		t.Errorf("the peer is in a build without it:\n%s\n%s", goMod, main)
	}
	if !strings.Contains(string(main), `_ "`+floorPackage+`"`) || !strings.Contains(string(main), `_ "`+modulePath+`"`) {
		t.Errorf("main.go does not import the module and the floor:\n%s", main)
	}
	floor, err := os.ReadFile(filepath.Join(build, "floor", "floor.go"))
	source, _ := os.ReadFile(filepath.Join("floor", "floor.go"))
	if err != nil || len(source) == 0 || !bytes.Equal(floor, source) {
		t.Errorf("the build's floor is not package floor's source (%v)", err)
	}
}

func TestPeerSourceRefusals(t *testing.T) {
	noModule := t.TempDir()
	if _, err := buildGoMod("/checkout", "github.com/ggicci/caddy-jwt@v1.1.1", noModule); err == nil {
		t.Error("a directory without go.mod was taken as the peer's source")
	}
	withModule := t.TempDir()
	if err := os.WriteFile(filepath.Join(withModule, "go.mod"), []byte("module x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, peer := range []string{"", "github.com/ggicci/caddy-jwt", "@v1.1.1"} {
		if _, err := buildGoMod("/checkout", peer, withModule); err == nil {
			t.Errorf("-peer %q was taken with a peer source", peer)
		}
	}
}

func stderrOf(err error) []byte {
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.Stderr
	}
	return nil
}
