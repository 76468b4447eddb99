package backend

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzParseError feeds Clerk's error answers: whatever the body and
// headers, the Error must be built without a panic, print as short
// printable text, and have a Kind.
func FuzzParseError(f *testing.F) {
	for _, seed := range []struct {
		status             int
		body, retry, trace string
	}{
		{404, `{"errors":[{"code":"resource_not_found","message":"Not found"}],"clerk_trace_id":"t1"}`, "", ""},
		{429, `{"errors":[]}`, "7", ""},
		{401, ``, "Sun, 22 Nov 2026 12:00:30 GMT", "cf-1"},
		{500, `{"errors":[{"code":"\u0000\n","message":"` + strings.Repeat("x", 300) + `"}]}`, "-1", ""},
		{503, `not json`, "999999999999999999999", "\x00"},
	} {
		f.Add(seed.status, seed.body, seed.retry, seed.trace)
	}
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, body, retryAfter, trace string) {
		resp := &http.Response{StatusCode: status, Header: http.Header{}}
		resp.Header.Set("Retry-After", retryAfter)
		resp.Header.Set("CF-Ray", trace)
		e := parseError(http.MethodPost, "/m2m_tokens/verify", resp, []byte(body))
		_ = e.Kind()
		for _, field := range []string{e.Code, e.Message, e.LongMessage, e.TraceID} {
			if len(field) > 200 || strings.IndexFunc(field, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
				t.Fatalf("unprintable or long field %q", field)
			}
		}
		if d := ParseRetryAfter(retryAfter, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("Retry-After %q gave %v", retryAfter, d)
		}
	})
}
