package verify

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScanObject(t *testing.T) {
	members, err := scanObject([]byte(` { "a" : 1 , "b":"x,}]", "c":{"d":[1,{"e":"}"}]}, "e":[ ], "f":true,"g":null, "h" : -1.5e3 } `), nil)
	require.NoError(t, err)
	got := map[string]string{}
	for _, m := range members {
		got[string(m.name)] = string(m.value)
	}
	assert.Equal(t, map[string]string{
		"a": "1", "b": `"x,}]"`, "c": `{"d":[1,{"e":"}"}]}`, "e": "[ ]", "f": "true", "g": "null", "h": "-1.5e3",
	}, got)

	members, err = scanObject([]byte(`{}`), nil)
	require.NoError(t, err)
	assert.Empty(t, members)

	members, err = scanObject([]byte(`{"s\u0075b":"mch_1","q\"":2}`), nil)
	require.NoError(t, err)
	assert.Equal(t, "sub", string(members[0].name), "escaped names are unescaped")
	assert.Equal(t, `q"`, string(members[1].name))
}

func TestScanObjectRefusals(t *testing.T) {
	for name, input := range map[string]string{
		"empty":                ``,
		"array":                `[1]`,
		"string":               `"x"`,
		"trailing data":        `{"a":1}}`,
		"two objects":          `{"a":1}{"b":2}`,
		"unterminated":         `{"a":1`,
		"duplicate":            `{"a":1,"a":2}`,
		"duplicate far apart":  `{"a":1,"b":2,"c":3,"a":4}`,
		"duplicate via escape": `{"sub":"mch_1","s\u0075b":"user_1"}`,
		"invalid UTF-8":        "{\"a\":\"\xff\"}",
		"single quotes":        `{'a':1}`,
		"trailing comma":       `{"a":1,}`,
		"too many members":     "{" + manyMembers(maxMembers+1) + "}",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := scanObject([]byte(input), nil)
			assert.Error(t, err)
		})
	}
}

func manyMembers(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = `"k` + strings.Repeat("x", i) + `":0`
	}
	return strings.Join(parts, ",")
}

func TestJSONValues(t *testing.T) {
	for raw, want := range map[string]string{`"abc"`: "abc", `"a\"b"`: `a"b`, `"\u006d\u0063\u0068_"`: "mch_", `""`: ""} {
		got, ok := jsonString([]byte(raw))
		assert.True(t, ok, raw)
		assert.Equal(t, want, got)
	}
	for _, raw := range []string{`1`, `null`, `["a"]`, `{}`, ``} {
		_, ok := jsonString([]byte(raw))
		assert.False(t, ok, raw)
	}
	for raw, want := range map[string]float64{`1`: 1, `-2.5`: -2.5, `1e3`: 1000, `0`: 0} {
		got, ok := jsonNumber([]byte(raw))
		assert.True(t, ok, raw)
		assert.Equal(t, want, got)
	}
	for _, raw := range []string{`"1"`, `null`, `true`, `1e400`, `-1e400`, ``, `[1]`} {
		_, ok := jsonNumber([]byte(raw))
		assert.False(t, ok, raw)
	}
}

func TestDuplicateMembersMakeATokenInvalid(t *testing.T) {
	private, _ := signingKeys(t)
	for name, tc := range map[string]struct{ header, payload string }{
		"duplicate alg in the header":  {`{"alg":"none","alg":"RS256","typ":"JWT","kid":"` + testKid + `"}`, `{"sub":"mch_1","exp":9999999999}`},
		"duplicate sub in the payload": {`{"alg":"RS256","typ":"JWT","kid":"` + testKid + `"}`, `{"sub":"user_1","sub":"mch_1","exp":9999999999}`},
		"escaped duplicate exp":        {`{"alg":"RS256","typ":"JWT","kid":"` + testKid + `"}`, `{"sub":"mch_1","exp":1,"\u0065xp":9999999999}`},
		"duplicate cat in the header":  {`{"alg":"RS256","cat":"cl_B7d4PD111AAA","cat":"cl_B7d4PD333AAA","kid":"` + testKid + `"}`, `{"sub":"mch_1","exp":9999999999}`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := classifyToken(sign(t, private, tc.header, tc.payload))
			requireReason(t, err, ReasonInvalid)
		})
	}
}
