package verify

import (
	"encoding/json"
	"fmt"
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
		"empty":                 ``,
		"array":                 `[1]`,
		"string":                `"x"`,
		"trailing data":         `{"a":1}}`,
		"two objects":           `{"a":1}{"b":2}`,
		"unterminated":          `{"a":1`,
		"duplicate":             `{"a":1,"a":2}`,
		"duplicate far apart":   `{"a":1,"b":2,"c":3,"a":4}`,
		"duplicate via escape":  `{"sub":"mch_1","s\u0075b":"user_1"}`,
		"invalid UTF-8":         "{\"a\":\"\xff\"}",
		"single quotes":         `{'a':1}`,
		"trailing comma":        `{"a":1,}`,
		"duplicate among many":  "{" + manyMembers(3000) + `,"k":1}`,
		"duplicates in a map":   "{" + manyMembers(namesInMapFrom+5) + `,"kxxx":1}`,
		"escaped, among many":   "{" + manyMembers(namesInMapFrom*2) + `,"\u006b":1}`,
		"duplicate at the edge": "{" + manyMembers(namesInMapFrom) + `,"k":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := scanObject([]byte(input), nil)
			assert.Error(t, err)
		})
	}
}

func TestScanObjectTakesAnyNumberOfMembers(t *testing.T) {
	for _, n := range []int{namesInMapFrom - 1, namesInMapFrom, namesInMapFrom + 1, 3000} {
		members, err := scanObject([]byte("{"+manyMembers(n)+"}"), nil)
		require.NoError(t, err, n)
		assert.Len(t, members, n)
	}
	var claims []string
	for i := range 2000 { // about as many members as a 16 KiB token holds
		claims = append(claims, fmt.Sprintf(`"%x":0`, i))
	}
	members, err := scanObject([]byte("{"+strings.Join(claims, ",")+"}"), nil)
	require.NoError(t, err)
	assert.Len(t, members, 2000)
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

// TestScanObjectNestsAsDeepAsEncodingJSON: arrays and objects nested up
// to encoding/json's limit (the top-level object included) are read, one
// level more is refused, as encoding/json refuses it.
func TestScanObjectNestsAsDeepAsEncodingJSON(t *testing.T) {
	for _, levels := range []int{maxNesting - 1, maxNesting, maxNesting + 1, maxNesting + 2} {
		nested := levels - 1 // within the top-level object
		cases := map[string]string{
			"arrays":  `{"a":` + strings.Repeat("[", nested) + strings.Repeat("]", nested) + `}`,
			"objects": `{"a":` + strings.Repeat(`{"b":`, nested) + "1" + strings.Repeat("}", nested) + `}`,
		}
		if nested%2 == 0 {
			cases["both"] = `{"a":` + strings.Repeat(`[{"b":`, nested/2) + "1" + strings.Repeat("}]", nested/2) + `}`
		}
		for name, data := range cases {
			_, err := scanObject([]byte(data), nil)
			assert.Equal(t, levels <= maxNesting, err == nil, "%d levels of %s: %v", levels, name, err)
			assert.Equal(t, json.Valid([]byte(data)), err == nil, "as encoding/json, %d levels of %s", levels, name)
		}
	}
}
