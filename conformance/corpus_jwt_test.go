package conformance

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// acceptance sends one valid credential of each kind to routes accepting
// each type: alone, in arrays, and any.
func (c *corpus) acceptance() {
	routes := []*profile{pemM2M, pemOAuth, pemSession, pemAPIKey, pemAny, pemSessionArray, pemMachineArray,
		pemMixedArray, jwksAny, machineM2M, machineAny, secretOpaque}
	for _, p := range routes {
		c.bearer("accept/m2m-jwt", c.m2m(), p)
		c.bearer("accept/oauth-jwt", c.oauth(), p)
		c.bearer("accept/session-jwt", c.session(), p)
		c.add("accept/session-cookie", p, sessionCookie(c.session(), c.now-60))
		c.presentOpaque("accept/m2m-opaque", c.m2mToken(c.m2mTokenOptions()), p)
		c.presentOpaque("accept/api-key", c.apiKey(userID, backendtest.APIKeyOptions{}), p)
		c.presentOpaque("accept/oauth-opaque", c.oauthToken(backendtest.OAuthOptions{}), p)
	}
	c.add("accept/nothing", pemAny)
	c.add("accept/nothing", pemM2M)
	c.add("accept/nothing", pemSession)
}

// algorithms: RS256/384/512 only, and only the one the key names.
func (c *corpus) algorithms() {
	for name, alg := range map[string]any{
		"RS384": "RS384", "RS512": "RS512", "none": "none", "HS256": "HS256", "ES256": "ES256",
		"PS256": "PS256", "empty": "", "lowercase": "rs256", "number": 256, "null": nil,
	} {
		c.bearer("alg/"+name, c.m2m(head("alg", alg)), pemM2M, jwksM2M)
	}
	c.bearer("alg/missing", c.m2m(head("alg", drop)), pemM2M, jwksM2M)
	c.bearer("alg/RS384", c.session(head("alg", "RS384")), pemSession, jwksSession)
	c.bearer("alg/HS256-keyed-with-the-public-key", c.hmacWithPublicKey(), pemM2M, jwksM2M)
}

// hmacWithPublicKey forges an M2M JWT with HS256 keyed by the instance's
// public key, the classic algorithm confusion.
func (c *corpus) hmacWithPublicKey() string {
	h, p := c.m2mParts()
	h["alg"] = "HS256"
	input := segment(h) + "." + segment(p)
	mac := hmac.New(sha256.New, []byte(c.in.clerk.PublicKeyPEM()))
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func segment(m claims) string {
	data, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(data)
}

// headerTypes: "typ" decides OAuth JWTs, and must be JWT (or absent) for
// the others.
func (c *corpus) headerTypes() {
	for name, typ := range map[string]any{
		"absent": drop, "lowercase": "jwt", "at+jwt": "at+jwt", "application-at+jwt": "application/at+jwt",
		"JOSE": "JOSE", "empty": "", "number": 1,
	} {
		c.bearer("typ/m2m-"+name, c.m2m(head("typ", typ)), pemM2M, pemAny)
	}
	for name, typ := range map[string]any{"application-at+jwt": "application/at+jwt", "uppercase": "AT+JWT", "absent": drop, "JWT": "JWT"} {
		c.bearer("typ/oauth-"+name, c.oauth(head("typ", typ)), pemOAuth, pemAny)
	}
	for name, typ := range map[string]any{"absent": drop, "at+jwt": "at+jwt", "lowercase": "jwt"} {
		c.bearer("typ/session-"+name, c.session(head("typ", typ)), pemSession, pemAny)
	}
}

// keyIDs: the JWKS key is found by kid; a JWT key ignores it.
func (c *corpus) keyIDs() {
	for name, kid := range map[string]any{"missing": drop, "unknown": "ins_2vYVunknownUNKNOWNunknownUN", "number": 7, "null": nil} {
		c.bearer("kid/"+name, c.m2m(head("kid", kid)), jwksM2M, pemM2M)
		c.bearer("kid/"+name, c.session(head("kid", kid)), jwksSession, pemSession)
	}
	c.bearer("kid/other-instance", c.m2m(signedBy(c.other), head("kid", c.other.KeyID())), jwksM2M, pemM2M)
}

// signatures: anything but Clerk's own signature over exactly these bytes
// fails.
func (c *corpus) signatures() {
	routes := []*profile{pemAny, jwksAny}
	token := c.m2m()
	parts := strings.Split(token, ".")
	otherParts := strings.Split(c.m2m(set("scopes", "mch_everyone")), ".")
	c.bearer("sig/other-key-same-kid", c.m2m(signedBy(c.other)), routes...)
	c.bearer("sig/payload-swapped", parts[0]+"."+otherParts[1]+"."+parts[2], routes...)
	c.bearer("sig/signature-swapped", parts[0]+"."+parts[1]+"."+otherParts[2], routes...)
	c.bearer("sig/truncated", parts[0]+"."+parts[1]+"."+parts[2][:len(parts[2])-4], routes...)
	c.bearer("sig/empty", parts[0]+"."+parts[1]+".", routes...)
	c.bearer("sig/alg-none-unsigned", c.unsigned(), routes...)
	c.bearer("sig/session-other-key", c.session(signedBy(c.other)), routes...)
}

// unsigned is an M2M JWT with alg "none" and no signature at all.
func (c *corpus) unsigned() string {
	h, p := c.m2mParts()
	h["alg"] = "none"
	return segment(h) + "." + segment(p) + "."
}

// timing: exp, nbf and iat at and across the skew's edges, and odd values.
func (c *corpus) timing() {
	for _, p := range []*profile{pemSkew0, pemAny, pemSkewMost} {
		skew := int64(5)
		if p.skew != nil {
			skew = int64(p.skew.Seconds())
		}
		// An edge case holds on the side time does not cross: at exp ==
		// now - skew a token is expired (and stays so); at nbf == now +
		// skew it is valid (and stays so). A fraction of a second beyond
		// the edge does not count: both sides drop it.
		c.bearer("time/exp-at-edge", c.m2m(set("exp", c.now-skew)), p)
		c.bearer("time/exp-past-edge", c.m2m(set("exp", c.now-skew-1)), p)
		c.bearer("time/exp-at-edge-and-a-fraction", c.m2m(set("exp", float64(c.now-skew)+0.999)), p)
		c.bearer("time/nbf-at-edge-and-a-fraction", c.m2m(set("nbf", float64(c.now+skew)+0.999)), p)
		c.bearer("time/nbf-at-edge", c.m2m(set("nbf", c.now+skew)), p)
		c.bearer("time/nbf-past-edge", c.m2m(set("nbf", c.now+skew+timeMargin)), p)
		c.bearer("time/iat-at-edge", c.m2m(set("iat", c.now+skew)), p)
		c.bearer("time/iat-past-edge", c.m2m(set("iat", c.now+skew+timeMargin)), p)
		c.bearer("time/exp-within-the-most-skew", c.m2m(set("exp", c.now-150)), p)
		c.bearer("time/nbf-within-the-most-skew", c.m2m(set("nbf", c.now+150)), p)
		c.bearer("time/session-exp-within-the-most-skew", c.session(set("exp", c.now-150)), p)
		c.bearer("time/oauth-nbf-within-the-most-skew", c.oauth(set("nbf", c.now+150)), p)
	}
	for name, exp := range map[string]any{
		"missing": drop, "string": fmt.Sprint(c.now + timeMargin), "null": nil, "true": true, "zero": 0, "negative": -1,
		"fraction-ahead": float64(c.now+timeMargin) + 0.5, "fraction-past": float64(c.now-60) + 0.5,
		"far-future": 1e12, "beyond-dates-ahead": 1e300, "beyond-dates-past": -1e300,
		"overflowing": json.RawMessage("1e400"), "exponent": json.RawMessage(fmt.Sprintf("%de0", c.now+timeMargin)),
	} {
		c.bearer("time/exp-"+name, c.m2m(set("exp", exp)), pemAny)
	}
	for name, value := range map[string]any{
		"string": fmt.Sprint(c.now), "null": nil, "beyond-dates-ahead": 1e300, "fraction-past": float64(c.now-60) + 0.5,
	} {
		c.bearer("time/nbf-"+name, c.m2m(set("nbf", value)), pemAny)
		c.bearer("time/iat-"+name, c.m2m(set("iat", value)), pemAny)
	}
	c.bearer("time/session-expired", c.session(set("exp", c.now-60)), pemSession, jwksSession)
	c.bearer("time/session-nbf-ahead", c.session(set("nbf", c.now+timeMargin)), pemSession)
	c.bearer("time/session-exp-missing", c.session(set("exp", drop)), pemSession)
	c.bearer("time/oauth-expired", c.oauth(set("exp", c.now-60)), pemOAuth, jwksOAuth)
	c.bearer("time/oauth-iat-ahead", c.oauth(set("iat", c.now+timeMargin)), pemOAuth)
}

// subjects: "sub" classifies M2M JWTs and must be a string.
func (c *corpus) subjects() {
	routes := []*profile{pemAny, pemM2M}
	c.bearer("sub/prefix-alone", c.m2m(set("sub", "mch_")), routes...)
	c.bearer("sub/uppercase-prefix", c.m2m(set("sub", "MCH_2vYVtest"), set("sid", "sess_1")), routes...)
	c.bearer("sub/space-before-prefix", c.m2m(set("sub", " mch_2vYVtest"), set("sid", "sess_1")), routes...)
	c.bearer("sub/user-with-m2m-category", c.m2m(set("sub", userID)), routes...)
	c.bearer("sub/machine-with-oauth-type", c.m2m(head("typ", "at+jwt")), routes...)
	for name, sub := range map[string]any{"missing": drop, "number": 42, "null": nil, "object": map[string]any{"id": userID}, "empty": ""} {
		c.bearer("sub/oauth-"+name, c.oauth(set("sub", sub)), pemOAuth, pemAny)
		c.bearer("sub/session-"+name, c.session(set("sub", sub)), pemSession)
	}
}

// scopes: how each side maps "scopes", "aud", "scp" and "scope".
func (c *corpus) scopes() {
	for name, edits := range map[string][]edit{
		"scopes-and-aud":  {set("scopes", "mch_a mch_b", "aud", []string{"mch_c"})},
		"scopes-empty":    {set("scopes", "")},
		"scopes-doubled":  {set("scopes", "mch_a  mch_b")},
		"aud-list":        {set("scopes", drop, "aud", []string{"mch_a", "mch_b"})},
		"aud-string":      {set("scopes", drop, "aud", "mch_a")},
		"aud-empty-list":  {set("scopes", drop, "aud", []string{})},
		"neither":         {set("scopes", drop, "aud", drop)},
		"scopes-list":     {set("scopes", []string{"mch_a", "mch_b"})},
		"scopes-null":     {set("scopes", nil)},
		"aud-numbers":     {set("scopes", drop, "aud", []int{1, 2})},
		"scopes-unicode":  {set("scopes", "mch_é mch_☃")},
		"custom-claims":   {set("role", "billing", "limits", map[string]any{"rps": 10, "burst": 2.5})},
		"large-integer":   {set("account", json.RawMessage("12345678901234567890"))},
		"no-custom-claim": {set("scopes", drop, "aud", drop, "iss", drop)},
	} {
		c.bearer("scopes/m2m-"+name, c.m2m(edits...), pemM2M)
	}
	for name, edits := range map[string][]edit{
		"scp-list":      {set("scp", []string{"read", "write"}, "scope", drop)},
		"scp-and-scope": {set("scp", []string{"read"}, "scope", "write")},
		"neither":       {set("scope", drop)},
		"scope-empty":   {set("scope", "")},
		"scp-string":    {set("scp", "read write", "scope", drop)},
		"scp-null":      {set("scp", nil)},
		"scp-numbers":   {set("scp", []int{1}, "scope", drop)},
		"client-absent": {set("client_id", drop)},
		"jti-absent":    {set("jti", drop)},
	} {
		c.bearer("scopes/oauth-"+name, c.oauth(edits...), pemOAuth)
	}
}

// authorizedParties: "azp" for session tokens, never for machine JWTs.
func (c *corpus) authorizedParties() {
	for name, azp := range map[string]any{"other": "https://evil.example.test", "missing": drop, "empty": "", "number": 1} {
		c.bearer("azp/session-"+name, c.session(set("azp", azp)), pemParties, pemAnyParties)
	}
	c.bearer("azp/session-listed", c.session(), pemParties, pemAnyParties)
	c.add("azp/cookie-other", pemParties, sessionCookie(c.session(set("azp", "https://evil.example.test")), c.now-60))
	c.bearer("azp/m2m-jwt", c.m2m(), pemAnyParties)
	c.bearer("azp/m2m-jwt-foreign-azp", c.m2m(set("azp", "https://evil.example.test")), pemAnyParties)
	c.bearer("azp/oauth-jwt", c.oauth(), pemAnyParties)
	c.bearer("azp/oauth-jwt-foreign-azp", c.oauth(set("azp", "https://evil.example.test")), pemAnyParties)
	c.presentOpaque("azp/m2m-opaque", c.m2mToken(c.m2mTokenOptions()), pemAnyParties)
}

// sessionStatus: a pending session is signed out.
func (c *corpus) sessionStatus() {
	for name, sts := range map[string]any{"active": "active", "pending": "pending", "empty": "", "unknown": "paused"} {
		c.bearer("sts/"+name, c.session(set("sts", sts)), pemSession, pemAny)
	}
	c.add("sts/pending-cookie", pemSession, sessionCookie(c.session(set("sts", "pending")), c.now-60))
}

// organizations: version 2 tokens name the organization in "o", others in
// "org_id".
func (c *corpus) organizations() {
	o := map[string]any{"id": orgID, "rol": "admin", "slg": "acme"}
	for name, edits := range map[string][]edit{
		"v2-o":               {set("o", o)},
		"v2-o-and-org_id":    {set("o", o, "org_id", org2ID)},
		"v2-org_id-only":     {set("org_id", org2ID)},
		"v1-org_id":          {set("v", drop, "org_id", org2ID, "org_role", "org:admin", "org_slug", "acme")},
		"v1-o-and-org_id":    {set("v", drop, "o", o, "org_id", org2ID)},
		"v1-o-only":          {set("v", drop, "o", o)},
		"v-string-2":         {set("v", "2", "o", o, "org_id", org2ID)},
		"v3":                 {set("v", 3, "o", o, "org_id", org2ID)},
		"v2-decimal":         {set("v", json.RawMessage("2.0"), "o", o)},
		"v2-o-without-id":    {set("o", map[string]any{"rol": "admin"})},
		"v2-o-null":          {set("o", nil, "org_id", org2ID)},
		"none":               {},
		"v1-with-permission": {set("v", 1, "org_id", org2ID, "org_permissions", []string{"org:invoices:read"})},
		"v2-o-string":        {set("o", orgID)},
		"v2-o-id-number":     {set("o", map[string]any{"id": 5, "rol": "admin"})},
		"v2-o-id-null":       {set("o", map[string]any{"id": nil})},
		"v2-o-array":         {set("o", []any{o})},
		"v1-org_id-number":   {set("v", drop, "org_id", 5)},
		"v1-org_id-null":     {set("v", drop, "org_id", nil)},
		"v1-org_id-object":   {set("v", drop, "org_id", map[string]any{"id": orgID})},
	} {
		c.bearer("org/"+name, c.session(edits...), pemSession)
	}
	c.add("org/v1-o-and-org_id-cookie", pemSession, sessionCookie(c.session(set("v", drop, "o", o, "org_id", org2ID)), c.now-60))
}

// categories: the "cat" header keeps each kind of JWT from passing as
// another.
func (c *corpus) categories() {
	cats := map[string]any{
		"absent": drop, "m2m": backendtest.M2MCategory, "session": backendtest.SessionCategory,
		"template": backendtest.JWTTemplateCategory, "ignore": backendtest.IgnoreCategory, "unknown": "cl_future",
		"number": 3,
	}
	for name, cat := range cats {
		c.bearer("cat/m2m-"+name, c.m2m(head("cat", cat)), pemM2M, pemAny)
		c.bearer("cat/session-"+name, c.session(head("cat", cat)), pemSession, pemAny, pemSessionArray)
		c.bearer("cat/oauth-"+name, c.oauth(head("cat", cat)), pemAny)
	}
	c.bearer("cat/template", c.template(), pemSession, pemAny, pemSessionArray)
	c.bearer("cat/template-without-cat", c.template(head("cat", drop)), pemSession, pemAny, pemSessionArray)
	c.bearer("cat/template-with-sid", c.template(set("sid", "sess_2vYVtemplate")), pemSession, pemAny)
	c.add("cat/template-cookie", pemSession, sessionCookie(c.template(), c.now-60))
	c.add("cat/m2m-jwt-cookie", pemSession, sessionCookie(c.m2m(), c.now-60))
	c.add("cat/m2m-jwt-cookie", pemAny, sessionCookie(c.m2m(), c.now-60))
}

// actors: the OAuth "act" chain (RFC 8693) and a session's impersonator.
func (c *corpus) actors() {
	for name, act := range map[string]any{
		"subject":        map[string]any{"sub": adminID},
		"chain":          map[string]any{"iss": "https://idp.example.test", "sub": adminID, "act": map[string]any{"sub": "mch_2vYVagentAGENTagentAGENTagent"}},
		"string":         adminID,
		"number-subject": map[string]any{"sub": 7},
		"null":           nil,
		"null-subject":   map[string]any{"sub": nil},
		"no-subject":     map[string]any{"iss": "https://idp.example.test"},
		"empty-object":   map[string]any{},
		"array":          []any{map[string]any{"sub": adminID}},
		"number":         7,
	} {
		c.bearer("act/oauth-jwt-"+name, c.oauth(set("act", act)), pemOAuth, pemAny)
		c.bearer("act/session-"+name, c.session(set("act", act)), pemSession)
	}
	chain := &backendtest.Actor{Subject: adminID, Actor: &backendtest.Actor{Issuer: "https://idp.example.test", Subject: "svc"}}
	c.presentOpaque("act/oauth-opaque", c.oauthToken(backendtest.OAuthOptions{Actor: chain}), secretOAuth)
}

// claimTypes: claims of another type than Clerk writes (a number for a
// string), and a claim named __proto__, which JavaScript may take for an
// object's prototype rather than a member of it.
func (c *corpus) claimTypes() {
	c.bearer("claims/session-sid-number", c.session(set("sid", 5)), pemSession)
	c.bearer("claims/session-jti-number", c.session(set("jti", 5)), pemSession)
	c.bearer("claims/m2m-jti-number", c.m2m(set("jti", 5)), pemM2M)
	c.bearer("claims/oauth-jti-number", c.oauth(set("jti", 5)), pemOAuth)
	c.bearer("claims/oauth-client_id-number", c.oauth(set("client_id", 5)), pemOAuth)
	proto := map[string]any{"sid": "sess_2vYVprotoPROTOprotoPROTOpr", "org_id": org2ID, "role": "admin"}
	c.bearer("claims/session-proto", c.session(set("__proto__", proto)), pemSession)
	c.bearer("claims/m2m-proto", c.m2m(set("__proto__", proto)), pemM2M)
	c.bearer("claims/oauth-proto", c.oauth(set("__proto__", proto)), pemOAuth)
	c.add("claims/session-proto-cookie", pemSession, sessionCookie(c.session(set("__proto__", proto)), c.now-60))
}

// audiences: "aud" against a configured audience, strictly for OAuth
// tokens, only when the token names one for sessions and M2M JWTs, never
// for API keys and opaque M2M tokens.
func (c *corpus) audiences() {
	for name, aud := range map[string]any{
		"absent": drop, "null": nil, "empty": "", "empty-list": []string{}, "list-of-empty": []string{""},
		"listed": apiAudience, "listed-in-a-list": []string{"https://else.example.test", otherAudience},
		"listed-with-an-empty": []string{"", apiAudience}, "unlisted": "https://else.example.test",
		"unlisted-list": []string{"https://else.example.test"}, "number": 7, "numbers": []int{1, 2},
		"object": map[string]any{"aud": apiAudience}, "nested": [][]string{{apiAudience}},
	} {
		c.bearer("aud/oauth-jwt-"+name, c.oauth(set("aud", aud)), pemAnyAudience, pemOAuth)
		c.bearer("aud/m2m-jwt-"+name, c.m2m(set("aud", aud, "scopes", drop)), pemAnyAudience)
		c.bearer("aud/session-"+name, c.session(set("aud", aud)), pemAnyAudience)
	}
	c.add("aud/session-cookie-unlisted", pemAnyAudience, sessionCookie(c.session(set("aud", "https://else.example.test")), c.now-60))
	for name, aud := range map[string][]string{"listed": {apiAudience}, "unlisted": {"https://else.example.test"}, "absent": nil} {
		c.presentOpaque("aud/oauth-opaque-"+name, c.oauthToken(backendtest.OAuthOptions{Audience: aud}), audienceAny)
	}
	for name, aud := range map[string]any{"a-string": apiAudience, "an-empty-list": []string{}, "numbers": []int{1}} {
		token := c.oauthToken(backendtest.OAuthOptions{})
		c.answered("aud/oauth-opaque-answer-with-"+name, token, c.amended(token, "aud", aud), audienceAny)
	}
	c.presentOpaque("aud/m2m-opaque", c.m2mToken(c.m2mTokenOptions()), audienceAny)
	c.presentOpaque("aud/api-key", c.apiKey(userID, backendtest.APIKeyOptions{}), audienceAny)
}

// issuers: "iss" against configured issuers, for session tokens only.
func (c *corpus) issuers() {
	for name, iss := range map[string]any{
		"listed": backendtest.Issuer, "listed-second": otherIssuer, "unlisted": "https://clerk.evil.example.test",
		"absent": drop, "empty": "", "number": 1, "list": []string{backendtest.Issuer},
		"other-case": strings.ToUpper(backendtest.Issuer),
	} {
		c.bearer("iss/session-"+name, c.session(set("iss", iss)), pemAnyIssuer)
		c.bearer("iss/m2m-jwt-"+name, c.m2m(set("iss", iss)), pemAnyIssuer)
		c.bearer("iss/oauth-jwt-"+name, c.oauth(set("iss", iss)), pemAnyIssuer)
	}
	c.add("iss/session-cookie-listed", pemAnyIssuer, sessionCookie(c.session(), c.now-60))
	c.add("iss/session-cookie-unlisted", pemAnyIssuer, sessionCookie(c.session(set("iss", "https://clerk.evil.example.test")), c.now-60))
}

// encodings: JSON and base64 that one parser may read otherwise than
// another.
func (c *corpus) encodings() {
	routes := []*profile{pemM2M, pemAny}
	kid := c.in.clerk.KeyID()
	m2mHeader := fmt.Sprintf(`{"alg":"RS256","typ":"JWT","kid":%q,"cat":%q}`, kid, backendtest.M2MCategory)
	c.bearer("json/duplicate-claim", c.spliced(c.m2mParts, "", `"sub":"mch_2vYVimpostorIMPOSTORimpostorI"`), routes...)
	c.bearer("json/duplicate-escaped-claim", c.spliced(c.m2mParts, "", `"s\u0075b":"mch_2vYVimpostorIMPOSTORimpostorI"`), routes...)
	c.bearer("json/duplicate-header-field", c.spliced(c.m2mParts, `"cat":"cl_B7d4PD111AAA"`, ""), routes...)
	c.bearer("json/duplicate-session-claim", c.spliced(c.sessionParts, "", `"sub":"user_2vYVimpostorIMPOSTORimposto"`), pemSession)
	c.bearer("json/whitespace", c.raw(" {\n\t"+m2mHeader[1:], c.payloadText(" \n", "")), routes...)
	c.bearer("json/byte-order-mark", c.raw(m2mHeader, "\ufeff"+c.payloadText("", "")), routes...)
	c.bearer("json/invalid-utf8", c.raw(m2mHeader, c.payloadText("", `,"note":"caf`+"\xe9"+`"`)), routes...)
	c.bearer("json/lone-surrogate", c.raw(m2mHeader, c.payloadText("", `,"note":"\ud800"`)), routes...)
	c.bearer("json/escaped-slash-and-unicode", c.raw(m2mHeader, c.payloadText("", `,"note":"a\/b\u00e9"`)), routes...)
	c.bearer("json/trailing-garbage", c.raw(m2mHeader, c.payloadText("", "")+" x"), routes...)
	c.bearer("json/payload-array", c.raw(m2mHeader, `["mch_2vYVtest"]`), routes...)
	c.bearer("json/payload-null", c.raw(m2mHeader, `null`), routes...)
	c.bearer("json/header-string", c.raw(`"RS256"`, c.payloadText("", "")), routes...)
	c.bearer("json/deep-claim", c.m2m(set("deep", nested(200))), routes...)
	c.bearer("json/300-claims", c.m2m(manyClaims(300)...), routes...)
	c.bearer("json/300-header-fields", c.m2m(manyFields(300)...), routes...)
	c.bearer("json/300-session-claims", c.session(manyClaims(300)...), pemSession)

	token := c.m2m()
	parts := strings.Split(token, ".")
	session := strings.Split(c.session(), ".")
	c.bearer("b64/four-segments", token+"."+parts[2], routes...)
	c.bearer("b64/two-segments", parts[0]+"."+parts[1], routes...)
	c.bearer("b64/padded", c.in.clerk.SignSegments(padded(parts[0]), padded(parts[1])), routes...)
	c.bearer("b64/padded-session", c.in.clerk.SignSegments(padded(session[0]), padded(session[1])), pemSession, pemAny)
	c.bearer("b64/standard-alphabet", c.in.clerk.SignSegments(standard(parts[0]), standard(parts[1])), routes...)
	c.bearer("b64/stray-bits", c.strayBits(), routes...)
	// Caddy reads up to 16 KiB of request headers, and Go's server 4 KiB
	// more: a 17 KiB token reaches the module, a 25 KiB one does not.
	c.bearer("size/15KiB", c.m2m(set("filler", strings.Repeat("x", 10500))), routes...)
	c.bearer("size/17KiB", c.m2m(set("filler", strings.Repeat("x", 12600))), routes...)
	c.bearer("size/25KiB", c.m2m(set("filler", strings.Repeat("x", 18500))), routes...)
}

// payloadText is an M2M payload as JSON text, with space before it and
// more members, written by hand, at its end.
func (c *corpus) payloadText(space, members string) string {
	_, p := c.m2mParts()
	text := splice(p, "")
	return space + text[:len(text)-1] + members + "}"
}

func nested(depth int) any {
	var v any = "bottom"
	for range depth {
		v = []any{v}
	}
	return v
}

func manyClaims(n int) []edit {
	var pairs []any
	for i := range n {
		pairs = append(pairs, fmt.Sprintf("c%d", i), i)
	}
	return []edit{set(pairs...)}
}

func manyFields(n int) []edit {
	var pairs []any
	for i := range n {
		pairs = append(pairs, fmt.Sprintf("x%d", i), i)
	}
	return []edit{head(pairs...)}
}

// padded gives a base64url segment its "=" padding.
func padded(s string) string {
	return s + strings.Repeat("=", (4-len(s)%4)%4)
}

// standard spells a segment in the standard base64 alphabet.
func standard(s string) string {
	return strings.NewReplacer("-", "+", "_", "/").Replace(s)
}

// strayBits is an M2M JWT whose payload segment has its unused low bits
// set: it decodes to the same bytes, but is not the canonical spelling.
func (c *corpus) strayBits() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for filler := ""; ; filler += "x" {
		parts := strings.Split(c.m2m(set("filler", filler)), ".")
		if payload := parts[1]; len(payload)%4 != 0 { // a length with unused bits
			last := strings.IndexByte(alphabet, payload[len(payload)-1])
			return c.in.clerk.SignSegments(parts[0], payload[:len(payload)-1]+string(alphabet[last|1]))
		}
	}
}
