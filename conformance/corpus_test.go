package conformance

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// testCase is one request, sent to both sides configured by the same
// profile.
type testCase struct {
	id      string // "<group>/<variant>@<profile>"
	profile *profile
	headers [][2]string // in order; Authorization may repeat
	// credential is the opaque credential the case presents, if any: what
	// each side asks Clerk about it is compared too.
	credential string
	// sdkMustAccept: the case holds only if Clerk's SDK accepts it (it
	// names cookies as the corpus does), lest a mistake of the corpus's
	// turn it into a refusal on both sides, which would compare nothing.
	sdkMustAccept bool
	// pausesClerk: Clerk answers the case 429, after which the module makes
	// no call until its Retry-After has passed (runModule runs it last).
	pausesClerk bool
}

// corpus builds the cases: credentials minted by the fake Clerk (and forged
// with another instance's key), each sent to the profiles where it tells
// something.
type corpus struct {
	in       *instance
	other    *backendtest.Server // another instance: its key forges
	caller   *backendtest.Machine
	stranger *backendtest.Machine // granted access to no one
	now      int64                // whole seconds; every time claim is relative to it
	serial   int
	cases    []*testCase
	ids      map[string]bool
}

// User and organization ids of the corpus.
const (
	userID  = "user_2vYVtestTESTtestTESTtestTEST"
	adminID = "user_2vYVadminADMINadminADMINadmi"
	orgID   = "org_2vYVorgORGorgORGorgORGorgORGo"
	org2ID  = "org_2vYVotherOTHERotherOTHERother"
)

// timeMargin is how long after the corpus is built every time claim still
// means what its case says: far more than a run takes, so that no verdict
// depends on when each side looks at the clock. Cases at an edge are
// placed on the side of it that time does not cross.
const timeMargin = 600

func newCorpus(in *instance, other *backendtest.Server) *corpus {
	c := &corpus{
		in:       in,
		other:    other,
		caller:   in.clerk.NewMachine("caller"),
		stranger: in.clerk.NewMachine("stranger"),
		now:      time.Now().Unix(),
		ids:      make(map[string]bool),
	}
	in.clerk.GrantScopes(c.caller, in.gateway.ID)
	return c
}

func (c *corpus) build() []*testCase {
	for _, group := range []func(){
		c.acceptance, c.algorithms, c.headerTypes, c.keyIDs, c.signatures,
		c.timing, c.subjects, c.scopes, c.authorizedParties, c.sessionStatus,
		c.organizations, c.cookies, c.cookieFamilies, c.developmentBrowsers, c.categories, c.encodings,
		c.authorization, c.actors, c.claimTypes, c.audiences, c.issuers, c.opaque, c.opaqueAnswers,
	} {
		group()
	}
	return c.cases
}

// add sends headers to profile p as case id@p.
func (c *corpus) add(id string, p *profile, headers ...[2]string) *testCase {
	id += "@" + p.name
	if c.ids[id] {
		panic("case defined twice: " + id)
	}
	c.ids[id] = true
	tc := &testCase{id: id, profile: p, headers: headers}
	c.cases = append(c.cases, tc)
	return tc
}

// bearer sends token as a bearer token to each profile.
func (c *corpus) bearer(id, token string, ps ...*profile) {
	for _, p := range ps {
		c.add(id, p, authorization("Bearer "+token))
	}
}

func authorization(value string) [2]string { return [2]string{"Authorization", value} }

func cookie(value string) [2]string { return [2]string{"Cookie", value} }

// next returns a fresh number for ids and jtis.
func (c *corpus) next() int {
	c.serial++
	return c.serial
}

// claims are a JOSE header or a JWT payload; drop as a value removes one.
type claims map[string]any

type dropped struct{}

var drop = dropped{}

// jwt is a token about to be signed.
type jwt struct {
	header, payload claims
	signer          *backendtest.Server
}

// edit changes a token before it is signed.
type edit func(*jwt)

// set sets (or drops) payload claims, name and value in turn.
func set(pairs ...any) edit {
	return func(j *jwt) { apply(j.payload, pairs) }
}

// head sets (or drops) header fields, name and value in turn.
func head(pairs ...any) edit {
	return func(j *jwt) { apply(j.header, pairs) }
}

func apply(m claims, pairs []any) {
	for i := 0; i < len(pairs); i += 2 {
		name := pairs[i].(string)
		if pairs[i+1] == drop {
			delete(m, name)
		} else {
			m[name] = pairs[i+1]
		}
	}
}

// signedBy signs with another instance's key (the header still names the
// fake's kid unless an edit changes it).
func signedBy(s *backendtest.Server) edit { return func(j *jwt) { j.signer = s } }

func (c *corpus) sign(header, payload claims, edits []edit) string {
	j := &jwt{header: maps.Clone(header), payload: maps.Clone(payload), signer: c.in.clerk}
	for _, e := range edits {
		e(j)
	}
	return j.signer.SignRaw(map[string]any(j.header), map[string]any(j.payload))
}

// validity are the time claims of a token valid for timeMargin.
func (c *corpus) validity() claims {
	return claims{"iat": c.now, "nbf": c.now, "exp": c.now + timeMargin}
}

// Each kind of JWT Clerk issues, as it mints them: the header and payload
// that the edits of a case start from.
func (c *corpus) m2mParts() (claims, claims) {
	header := claims{"alg": "RS256", "typ": "JWT", "kid": c.in.clerk.KeyID(), "cat": backendtest.M2MCategory}
	payload := c.validity()
	maps.Copy(payload, claims{
		"jti":    fmt.Sprintf("mt_%032x", c.next()),
		"sub":    c.caller.ID,
		"aud":    []string{c.in.gateway.ID},
		"scopes": c.in.gateway.ID,
		"iss":    backendtest.Issuer,
	})
	return header, payload
}

// sessionParts are a version 2 session token of userID, issued to
// appOrigin.
func (c *corpus) sessionParts() (claims, claims) {
	header := claims{"alg": "RS256", "typ": "JWT", "kid": c.in.clerk.KeyID(), "cat": backendtest.SessionCategory}
	payload := c.validity()
	maps.Copy(payload, claims{
		"sub": userID,
		"sid": fmt.Sprintf("sess_%027d", c.next()),
		"iss": backendtest.Issuer,
		"azp": appOrigin,
		"v":   2,
		"fva": []int{0, -1},
	})
	return header, payload
}

// oauthParts are an OAuth access token in JWT form (RFC 9068) for userID.
func (c *corpus) oauthParts() (claims, claims) {
	header := claims{"alg": "RS256", "typ": "at+jwt", "kid": c.in.clerk.KeyID()}
	payload := c.validity()
	maps.Copy(payload, claims{
		"client_id": c.in.clerk.OAuthClientID(),
		"sub":       userID,
		"jti":       fmt.Sprintf("oat_%032x", c.next()),
		"iss":       backendtest.Issuer,
		"scope":     "read:invoices write:invoices",
	})
	return header, payload
}

// templateParts are a JWT-template token of userID: no session id.
func (c *corpus) templateParts() (claims, claims) {
	header := claims{"alg": "RS256", "typ": "JWT", "kid": c.in.clerk.KeyID(), "cat": backendtest.JWTTemplateCategory}
	payload := c.validity()
	maps.Copy(payload, claims{"sub": userID, "iss": backendtest.Issuer, "email": "ada@example.test"})
	return header, payload
}

func (c *corpus) m2m(edits ...edit) string      { return c.signed(c.m2mParts, edits) }
func (c *corpus) session(edits ...edit) string  { return c.signed(c.sessionParts, edits) }
func (c *corpus) oauth(edits ...edit) string    { return c.signed(c.oauthParts, edits) }
func (c *corpus) template(edits ...edit) string { return c.signed(c.templateParts, edits) }

// signed signs the token that parts make, edited.
func (c *corpus) signed(parts func() (claims, claims), edits []edit) string {
	h, p := parts()
	return c.sign(h, p, edits)
}

// spliced signs parts whose JSON text gets more members, written by hand
// (a duplicate, an odd spelling), added at the end of the header and of
// the payload.
func (c *corpus) spliced(parts func() (claims, claims), headerMembers, payloadMembers string) string {
	h, p := parts()
	return c.raw(splice(h, headerMembers), splice(p, payloadMembers))
}

func splice(m claims, members string) string {
	data, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	if members == "" {
		return string(data)
	}
	return string(data[:len(data)-1]) + "," + members + "}"
}

// raw signs a header and payload given as JSON text, verbatim.
func (c *corpus) raw(header, payload string) string {
	return c.in.clerk.SignRaw(json.RawMessage(header), json.RawMessage(payload))
}

// sessionCookie is the Cookie header of a browser signed in with token,
// its client last updated at clientUAT.
func sessionCookie(token string, clientUAT int64) [2]string {
	return cookie(fmt.Sprintf("__session=%s; __client_uat=%d", token, clientUAT))
}

// cookies is one Cookie header of the pairs given, in order.
func cookies(pairs ...string) [2]string { return cookie(strings.Join(pairs, "; ")) }

// signedIn are the pairs of a browser signed in with token, its client
// last updated at clientUAT, in the cookies of a family: "" for the plain
// names, else "_" and an app's suffix.
func signedIn(family, token string, clientUAT int64) []string {
	return []string{"__session" + family + "=" + token, fmt.Sprint("__client_uat", family, "=", clientUAT)}
}
