package conformance

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// identityFields are the parts of an identity that both sides report, by
// the name of the module's placeholder ({http.auth.user.<name>}); the
// claims are compared apart, as JSON.
var identityFields = []string{
	"token_type", "token_format", "id", "token_id", "scopes", "expires_at",
	"session_id", "org_id", "client_id", "name", "actor",
}

// disagreement is one way the two sides differ on a case.
type disagreement struct {
	caseID string
	aspect string // "verdict", "wire", or an identity field
	// sdkAccepts is the SDK's verdict, for verdict disagreements.
	sdkAccepts  bool
	sdk, module string // what each side said
}

func (d disagreement) String() string {
	return fmt.Sprintf("%s: %s: Clerk's SDK %s; the module %s", d.caseID, d.aspect, d.sdk, d.module)
}

// compareCase lists how the two sides differ on one case: the verdict
// and, when both accept, the identity.
func compareCase(tc *testCase, sdk sdkResult, module moduleResult) []disagreement {
	if sdk.Accepted != module.accepted() {
		return []disagreement{{caseID: tc.id, aspect: "verdict", sdkAccepts: sdk.Accepted, sdk: sdk.String(), module: module.String()}}
	}
	if !sdk.Accepted {
		return nil
	}
	var found []disagreement
	for _, field := range identityFields {
		if s, m := fmt.Sprint(sdk.Identity[field]), fmt.Sprint(module.identity[field]); s != m {
			found = append(found, disagreement{caseID: tc.id, aspect: field, sdkAccepts: true, sdk: fmt.Sprintf("%q", s), module: fmt.Sprintf("%q", m)})
		}
	}
	// The SDK exposes no claims of OAuth tokens (null): nothing to compare.
	if sdkClaims := sdk.Identity["claims"]; sdkClaims != nil && !reflect.DeepEqual(sdkClaims, module.identity["claims"]) {
		found = append(found, disagreement{caseID: tc.id, aspect: "claims", sdkAccepts: true, sdk: compact(sdkClaims), module: compact(module.identity["claims"])})
	}
	return found
}

func compact(v any) string {
	data, _ := json.Marshal(v)
	if len(data) > 200 {
		return string(data[:200]) + "…"
	}
	return string(data)
}

// Who made a request to the fake Clerk, by its User-Agent.
const (
	sdkAgentPrefix    = "@clerk/backend@"
	moduleAgentPrefix = "caddy-clerk-m2m/"
)

// wireRequest is what Clerk reads of a request: how it is addressed, who
// it authenticates as, which API version and content it speaks, and its
// body (as JSON, so that spacing and member order do not count). The
// User-Agent (each side names itself) and the transport's own headers are
// not compared.
type wireRequest struct {
	Method, Path, Query, Authorization, APIVersion, ContentType, Body string
}

func wireOf(r backendtest.Request) wireRequest {
	path, query, _ := strings.Cut(r.Path, "?")
	body := string(r.Body)
	var decoded any
	if json.Unmarshal(r.Body, &decoded) == nil {
		if members, ok := decoded.(map[string]any); ok {
			// A member sent as null says what leaving it out says.
			maps.DeleteFunc(members, func(_ string, v any) bool { return v == nil })
		}
		body = compact(decoded)
	}
	return wireRequest{
		Method: r.Method, Path: path, Query: query, Authorization: r.Header.Get("Authorization"),
		APIVersion: r.Header.Get("Clerk-API-Version"), ContentType: r.Header.Get("Content-Type"), Body: body,
	}
}

func (w wireRequest) String() string {
	authorization := w.Authorization
	if scheme, key, ok := strings.Cut(authorization, " "); ok && len(key) > 8 {
		authorization = scheme + " " + key[:8] + "…" // the fake's key, but keep reports short
	}
	return fmt.Sprintf("%s %s?%s [Authorization: %s; Clerk-API-Version: %s; Content-Type: %s] %s",
		w.Method, w.Path, w.Query, authorization, w.APIVersion, w.ContentType, w.Body)
}

// wire sorts the requests the fake received by side and by the credential
// they ask about ("" for the key set).
type wire struct {
	sdk, module map[string][]wireRequest
}

func sortWire(requests []backendtest.Request) wire {
	w := wire{sdk: map[string][]wireRequest{}, module: map[string][]wireRequest{}}
	for _, r := range requests {
		side := w.sdk
		switch agent := r.Header.Get("User-Agent"); {
		case strings.HasPrefix(agent, sdkAgentPrefix):
		case strings.HasPrefix(agent, moduleAgentPrefix):
			side = w.module
		default:
			continue // the corpus's own setup
		}
		about := credentialIn(r.Body)
		if r.Method == http.MethodPost && strings.TrimPrefix(r.Path, "/v1") == "/m2m_tokens" {
			about = mintAbout(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		}
		if wr := wireOf(r); !slices.Contains(side[about], wr) {
			side[about] = append(side[about], wr)
		}
	}
	return w
}

// credentialIn returns the credential a verify request names.
func credentialIn(body []byte) string {
	var fields map[string]any
	_ = json.Unmarshal(body, &fields)
	for _, name := range []string{"token", "secret", "access_token"} {
		if s, ok := fields[name].(string); ok {
			return s
		}
	}
	return ""
}

// compareWire lists where both sides asked Clerk about a case's credential
// (or fetched the key set, or minted) in different ways. A side that did
// not ask at all has its verdict compared instead.
func (w wire) compare(cases []*testCase, mints []*mintCase) []disagreement {
	var found []disagreement
	check := func(id, about string) {
		s, m := w.sdk[about], w.module[about]
		if len(s) > 0 && len(m) > 0 && !sameRequests(s, m) {
			found = append(found, disagreement{caseID: id, aspect: "wire", sdk: listRequests(s), module: listRequests(m)})
		}
	}
	check("wire/jwks@"+jwksAny.name, "")
	for _, m := range mints {
		if len(w.sdk[m.wireKey()]) == 0 || len(w.module[m.wireKey()]) == 0 {
			found = append(found, disagreement{caseID: "mint/" + m.id, aspect: "wire", sdk: listRequests(w.sdk[m.wireKey()]),
				module: listRequests(w.module[m.wireKey()])})
		}
		check("mint/"+m.id, m.wireKey())
	}
	for _, tc := range cases {
		if tc.credential != "" {
			check(tc.id, tc.credential)
		}
	}
	return found
}

func sameRequests(a, b []wireRequest) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(r wireRequest) bool { return !slices.Contains(b, r) })
}

func listRequests(rs []wireRequest) string {
	var lines []string
	for _, r := range rs {
		lines = append(lines, r.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, " | ")
}

// comparedCalls counts the cases whose credential both sides asked Clerk
// about, so that the comparison of those calls compares something.
func (w wire) comparedCalls(cases []*testCase) int {
	n := 0
	for _, tc := range cases {
		if tc.credential != "" && len(w.sdk[tc.credential]) > 0 && len(w.module[tc.credential]) > 0 {
			n++
		}
	}
	return n
}

// jwksFetched reports whether both sides fetched the key set, so that the
// comparison of its fetch compares something.
func (w wire) jwksFetched() bool {
	return len(w.sdk[""]) > 0 && len(w.module[""]) > 0 && w.sdk[""][0].Method == http.MethodGet
}
