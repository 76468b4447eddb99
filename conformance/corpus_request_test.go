package conformance

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
	// Where sessions are accepted, the SDK reads the cookies when the
	// header holds no credential it takes (it takes the scheme "Bearer"
	// only, as it is spelled).
	browser := sessionCookie(c.session(), c.now-60)
	c.add("auth/lowercase-scheme-beside-cookie", pemSession, authorization("bearer "+session), browser)
	c.add("auth/lowercase-scheme-garbage-beside-cookie", pemSession, authorization("bearer garbage"), browser)
	c.add("auth/basic-scheme-beside-cookie", pemSession, authorization("Basic dXNlcjpwYXNz"), browser)
	c.add("auth/empty-beside-cookie", pemSession, authorization(""), browser)
	c.add("auth/scheme-only-beside-cookie", pemSession, authorization("Bearer"), browser)
	mt := c.m2mToken(c.m2mTokenOptions())
	c.add("auth/opaque-no-scheme", machineM2M, authorization(mt)).credential = mt
	mt = c.m2mToken(c.m2mTokenOptions())
	c.add("auth/opaque-lowercase-scheme", machineM2M, authorization("bearer "+mt)).credential = mt
}
