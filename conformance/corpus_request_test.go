package conformance

import (
	"fmt"
	"strings"
)

// cookies: a session in the __session cookie counts only with the
// __client_uat cookie of a signed-in browser, no later than the token.
func (c *corpus) cookies() {
	for _, p := range []*profile{pemSession, pemAny, jwksSession} {
		c.add("cookie/client-uat-before-iat", p, sessionCookie(c.session(), c.now-60))
		c.add("cookie/client-uat-at-iat", p, sessionCookie(c.session(), c.now))
		c.add("cookie/client-uat-after-iat", p, sessionCookie(c.session(), c.now+1))
		c.add("cookie/client-uat-missing", p, cookie("__session="+c.session()))
		c.add("cookie/client-uat-zero", p, sessionCookie(c.session(), 0))
	}
	for name, uat := range map[string]string{
		"not-a-number": "soon", "negative": "-5", "trailing-letters": fmt.Sprint(c.now-60) + "s", "empty": "",
		"twice": fmt.Sprintf("%d; __client_uat=%d", c.now-60, c.now+60), "hexadecimal": "0x10", "plus-sign": fmt.Sprint("+", c.now-60),
	} {
		c.add("cookie/client-uat-"+name, pemSession, cookie("__session="+c.session()+"; __client_uat="+uat))
	}
	c.add("cookie/client-uat-alone", pemSession, cookie(fmt.Sprint("__client_uat=", c.now-60)))
	c.add("cookie/iat-missing", pemSession, sessionCookie(c.session(set("iat", drop)), c.now))
	c.add("cookie/iat-fraction", pemSession, sessionCookie(c.session(set("iat", float64(c.now)+0.5)), c.now))
	c.add("cookie/iat-string", pemSession, sessionCookie(c.session(set("iat", fmt.Sprint(c.now-60))), c.now))
	c.add("cookie/session-twice", pemSession, cookie(fmt.Sprintf("__session=%s; __session=%s; __client_uat=%d", c.session(), c.session(), c.now-60)))
	c.add("cookie/session-empty", pemSession, cookie(fmt.Sprint("__session=; __client_uat=", c.now-60)))
	c.add("cookie/quoted", pemSession, cookie(fmt.Sprintf(`__session="%s"; __client_uat=%d`, c.session(), c.now-60)))
	c.add("cookie/percent-encoded", pemSession, cookie(fmt.Sprintf("__session=%s; __client_uat=%d",
		strings.ReplaceAll(c.session(), ".", "%2E"), c.now-60)))
	c.add("cookie/among-others", pemSession, cookie(fmt.Sprintf("theme=dark; __session=%s; lang=en; __client_uat=%d", c.session(), c.now-60)))
	c.add("cookie/expired", pemSession, sessionCookie(c.session(set("exp", c.now-60)), c.now-120))
	c.add("cookie/opaque-token", pemSession, sessionCookie(c.m2mToken(c.m2mTokenOptions()), c.now-60))
	c.add("cookie/header-wins", pemSession, authorization("Bearer "+c.session()), sessionCookie(c.session(), c.now+60))
	c.add("cookie/header-wins-refusing", pemSession, authorization("Bearer garbage"), sessionCookie(c.session(), c.now-60))
	c.add("cookie/two-cookie-headers", pemSession, cookie("__session="+c.session()), cookie(fmt.Sprint("__client_uat=", c.now-60)))
}

// authorization: the forms of the Authorization header each side reads.
func (c *corpus) authorization() {
	m2m := c.m2m()
	for name, value := range map[string]string{
		"lowercase-scheme": "bearer " + m2m, "uppercase-scheme": "BEARER " + m2m, "no-scheme": m2m,
		"basic-scheme": "Basic " + m2m, "two-spaces": "Bearer  " + m2m, "trailing-word": "Bearer " + m2m + " extra",
		"scheme-only": "Bearer", "tab": "Bearer\t" + m2m, "empty": "",
	} {
		c.add("auth/"+name, pemM2M, authorization(value))
		c.add("auth/"+name, pemAny, authorization(value))
	}
	session := c.session()
	c.add("auth/session-no-scheme", pemSession, authorization(session))
	c.add("auth/session-lowercase-scheme", pemSession, authorization("bearer "+session))
	c.add("auth/two-headers", pemM2M, authorization("Bearer "+m2m), authorization("Bearer "+c.m2m()))
	c.add("auth/two-headers-one-garbage", pemM2M, authorization("Bearer "+m2m), authorization("Bearer garbage"))
	mt := c.m2mToken(c.m2mTokenOptions())
	c.add("auth/opaque-no-scheme", machineM2M, authorization(mt)).credential = mt
	mt = c.m2mToken(c.m2mTokenOptions())
	c.add("auth/opaque-lowercase-scheme", machineM2M, authorization("bearer "+mt)).credential = mt
}
