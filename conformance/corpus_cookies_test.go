package conformance

import (
	"fmt"
	"strings"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
)

// cookies: a session in the __session cookie counts only with the
// __client_uat cookie of a signed-in browser, no later than the token;
// both are read as the SDK's cookie parser reads them (the first of a
// name, an empty one as none, quotes kept, pairs split at ";" only).
func (c *corpus) cookies() {
	for _, p := range []*profile{pemSession, pemAny, jwksSession} {
		c.add("cookie/client-uat-before-iat", p, sessionCookie(c.session(), c.now-60))
		c.add("cookie/client-uat-at-iat", p, sessionCookie(c.session(), c.now))
		c.add("cookie/client-uat-after-iat", p, sessionCookie(c.session(), c.now+1))
		c.add("cookie/client-uat-missing", p, cookie("__session="+c.session()))
		c.add("cookie/client-uat-zero", p, sessionCookie(c.session(), 0))
	}
	signedInAt := fmt.Sprint(c.now - 60)
	for name, uat := range map[string]string{
		"not-a-number": "soon", "negative": "-5", "trailing-letters": signedInAt + "s", "empty": "",
		"twice": fmt.Sprintf("%d; __client_uat=%d", c.now-60, c.now+60), "hexadecimal": "0x10", "plus-sign": "+" + signedInAt,
		"quoted": `"` + signedInAt + `"`, "zero-first": "0; __client_uat=" + signedInAt, "empty-first": "; __client_uat=" + signedInAt,
		"zeros-before": "000" + signedInAt,
	} {
		c.add("cookie/client-uat-"+name, pemSession, cookie("__session="+c.session()+"; __client_uat="+uat))
	}
	c.add("cookie/client-uat-alone", pemSession, cookie(fmt.Sprint("__client_uat=", c.now-60)))
	c.add("cookie/iat-missing", pemSession, sessionCookie(c.session(set("iat", drop)), c.now))
	c.add("cookie/iat-fraction", pemSession, sessionCookie(c.session(set("iat", float64(c.now)+0.5)), c.now))
	c.add("cookie/iat-string", pemSession, sessionCookie(c.session(set("iat", fmt.Sprint(c.now-60))), c.now))
	c.add("cookie/session-twice", pemSession, cookie(fmt.Sprintf("__session=%s; __session=%s; __client_uat=%d", c.session(), c.session(), c.now-60)))
	c.add("cookie/session-twice-then-another-app", pemSession, cookies("__session="+c.session(), "__session="+c.anotherAppsSession(),
		"__client_uat="+signedInAt))
	c.add("cookie/session-another-app-first", pemSession, cookies("__session="+c.anotherAppsSession(), "__session="+c.session(),
		"__client_uat="+signedInAt))
	c.add("cookie/session-empty-first", pemSession, cookies("__session=", "__session="+c.session(), "__client_uat="+signedInAt))
	c.add("cookie/session-empty", pemSession, cookie(fmt.Sprint("__session=; __client_uat=", c.now-60)))
	c.add("cookie/quoted", pemSession, cookie(fmt.Sprintf(`__session="%s"; __client_uat=%d`, c.session(), c.now-60)))
	c.add("cookie/percent-encoded", pemSession, cookie(fmt.Sprintf("__session=%s; __client_uat=%d",
		strings.ReplaceAll(c.session(), ".", "%2E"), c.now-60)))
	c.add("cookie/among-others", pemSession, cookie(fmt.Sprintf("theme=dark; __session=%s; lang=en; __client_uat=%d", c.session(), c.now-60)))
	c.add("cookie/no-spaces", pemSession, cookie("__session="+c.session()+";__client_uat="+signedInAt))
	c.add("cookie/spaces-and-tabs", pemSession, cookie("__session = "+c.session()+" ;\t__client_uat=\t"+signedInAt))
	c.add("cookie/comma-separated", pemSession, cookie("__session="+c.session()+", __client_uat="+signedInAt))
	c.add("cookie/name-case", pemSession, cookie("__Session="+c.session()+"; __client_uat="+signedInAt))
	c.add("cookie/expired", pemSession, sessionCookie(c.session(set("exp", c.now-60)), c.now-120))
	c.add("cookie/opaque-token", pemSession, sessionCookie(c.m2mToken(c.m2mTokenOptions()), c.now-60))
	c.add("cookie/header-wins", pemSession, authorization("Bearer "+c.session()), sessionCookie(c.session(), c.now+60))
	c.add("cookie/header-wins-refusing", pemSession, authorization("Bearer garbage"), sessionCookie(c.session(), c.now-60))
	c.add("cookie/two-cookie-headers", pemSession, cookie("__session="+c.session()), cookie(fmt.Sprint("__client_uat=", c.now-60)))
}

// anotherAppsSession is a session of another Clerk instance, an app on
// the same domain as this one: issued by its Frontend API, signed by its
// key.
func (c *corpus) anotherAppsSession(edits ...edit) string {
	return c.session(append([]edit{signedBy(c.other), set("iss", otherIssuer)}, edits...)...)
}

// cookieFamilies: which of a browser's cookies hold this app's session.
// Clerk's frontend writes each cookie twice, plain and suffixed for its
// app, so that apps of several instances on one domain (two apps on
// localhost) each find their own: the plain ones are those of the app that
// wrote last. Both sides read the suffixed ones when the plain session is
// another instance's (by its issuer), and when both hold a session of this
// one, the newer, unless this app's browser signed out.
func (c *corpus) cookieFamilies() {
	uat := c.now - 60
	for _, p := range []*profile{pemSession, pemAny, jwksSession, pemSessionArray} {
		ours := "_" + p.cookieSuffix()
		c.add("cookie/suffixed", p, cookies(signedIn(ours, c.session(), uat)...)).sdkMustAccept = true
		c.add("cookie/two-apps", p, cookies(append(signedIn("", c.anotherAppsSession(), uat), signedIn(ours, c.session(), uat)...)...)).sdkMustAccept = true
		c.add("cookie/two-apps-ours-first", p, cookies(append(signedIn(ours, c.session(), uat), signedIn("", c.anotherAppsSession(), uat)...)...))
		c.add("cookie/another-app-alone", p, cookies(signedIn("", c.anotherAppsSession(), uat)...))
	}
	ours := "_" + pemSession.cookieSuffix()
	plainAnd := func(plain []string, suffixed ...string) [2]string { return cookies(append(plain, suffixed...)...) }
	c.add("cookie/another-issuer-this-key", pemSession, cookies(signedIn("", c.session(set("iss", otherIssuer)), uat)...))
	c.add("cookie/another-suffix", pemSession, cookies(signedIn("_XXXXXXXX", c.session(), uat)...))
	c.add("cookie/suffixed-session-alone", pemSession, cookie("__session"+ours+"="+c.session()))
	c.add("cookie/suffixed-client-uat-alone", pemSession, cookie(fmt.Sprint("__client_uat", ours, "=", uat)))
	c.add("cookie/suffixed-empty", pemSession, plainAnd(signedIn("", c.session(), uat), "__session"+ours+"=", "__client_uat"+ours+"="))
	c.add("cookie/suffixed-session-empty", pemSession, plainAnd(signedIn("", c.session(), uat), "__session"+ours+"=", fmt.Sprint("__client_uat", ours, "=", uat)))
	host := strings.TrimPrefix(backendtest.Issuer, "https://")
	for name, iss := range map[string]any{
		"trailing-slash": backendtest.Issuer + "/", "http": "http://" + host, "bare-host": host, "uppercase-scheme": "HTTPS://" + host,
		"uppercase-host": "https://" + strings.ToUpper(host), "port": backendtest.Issuer + ":443", "doubled-scheme": "https://" + backendtest.Issuer,
		"absent": drop, "empty": "", "number": 7,
	} {
		c.add("cookie/issuer-"+name, pemSession, plainAnd(signedIn("", c.session(set("iss", iss)), uat)))
		c.add("cookie/issuer-"+name+"-beside-suffixed", pemSession, plainAnd(signedIn("", c.session(set("iss", iss)), uat), signedIn(ours, c.session(), uat)...))
	}
	newer, older := func() string { return c.session() }, func() string { return c.session(set("iat", c.now-50)) }
	c.add("cookie/plain-newer", pemSession, plainAnd(signedIn("", newer(), uat), signedIn(ours, older(), uat)...))
	c.add("cookie/plain-older", pemSession, plainAnd(signedIn("", older(), uat), signedIn(ours, newer(), uat)...))
	c.add("cookie/plain-as-old", pemSession, plainAnd(signedIn("", newer(), uat), signedIn(ours, newer(), uat)...))
	c.add("cookie/plain-signed-out", pemSession, plainAnd(signedIn("", newer(), 0), signedIn(ours, older(), uat)...))
	c.add("cookie/suffixed-signed-out", pemSession, plainAnd(signedIn("", older(), uat), signedIn(ours, newer(), 0)...))
	c.add("cookie/suffixed-client-uat-00", pemSession, plainAnd(signedIn("", older(), uat), "__session"+ours+"="+newer(), "__client_uat"+ours+"=00"))
	c.add("cookie/garbage-beside-suffixed", pemSession, plainAnd(signedIn("", "garbage", uat), signedIn(ours, c.session(), uat)...))
	c.add("cookie/quoted-beside-suffixed", pemSession, plainAnd(signedIn("", `"`+c.anotherAppsSession()+`"`, uat), signedIn(ours, c.session(), uat)...))
	c.add("cookie/iat-not-a-number-beside-suffixed", pemSession, plainAnd(signedIn("", c.session(set("iat", "soon")), uat), signedIn(ours, c.session(), uat)...))
	nullPayload := segment(claims{"alg": "RS256"}) + "." + "bnVsbA" + "." + "c2ln" // the payload is null
	c.add("cookie/null-payload", pemSession, cookies(signedIn("", nullPayload, uat)...))
	c.add("cookie/null-payload-suffixed", pemSession, cookies(signedIn(ours, nullPayload, uat)...))
	c.add("cookie/null-payload-beside-bearer", pemSession, authorization("Bearer "+c.session()), cookies(signedIn("", nullPayload, uat)...))
}

// developmentBrowsers: a development instance's session counts only with
// its browser's __clerk_db_jwt cookie, of the family the session is read
// from.
func (c *corpus) developmentBrowsers() {
	p, uat := pemSessionDev, c.now-60
	ours := "_" + p.cookieSuffix()
	browser := func(family string) string { return "__clerk_db_jwt" + family + "=dvb_2vYVbrowserBROWSERbrowserBROWSE" }
	c.add("dev/plain", p, cookies(append(signedIn("", c.session(), uat), browser(""))...)).sdkMustAccept = true
	c.add("dev/plain-without-browser", p, cookies(signedIn("", c.session(), uat)...))
	c.add("dev/suffixed", p, cookies(append(signedIn(ours, c.session(), uat), browser(ours))...)).sdkMustAccept = true
	c.add("dev/suffixed-with-a-plain-browser", p, cookies(append(signedIn(ours, c.session(), uat), browser(""))...))
	anotherApp := append(signedIn("", c.anotherAppsSession(), uat), browser(""))
	c.add("dev/two-apps", p, cookies(append(anotherApp, append(signedIn(ours, c.session(), uat), browser(ours))...)...))
}
