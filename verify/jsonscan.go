package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// member is one top-level member of a JSON object: its name, unescaped, and
// its value as raw JSON. Both usually alias the scanned bytes.
type member struct {
	name  []byte
	value []byte
}

// namesInMapFrom is how many members an object may have before the hashes
// of the names seen are kept in a map rather than the names compared with
// each other: comparing is cheaper for the dozen members of Clerk's tokens,
// the map keeps an object of thousands of tiny members (as many as a 16 KiB
// token holds) linear. No count of members is refused: Clerk's SDK sets no
// bound either.
const namesInMapFrom = 32

// nameSeed seeds the hashes of member names, unknown outside the process so
// that nobody can craft names whose hashes collide.
var nameSeed = maphash.MakeSeed()

var (
	errNotJSON         = errors.New("not valid JSON")
	errNotObject       = errors.New("not a JSON object")
	errDuplicateMember = errors.New("a member name appears twice")
)

// scanObject checks that data is exactly one valid JSON object, in valid
// UTF-8 (which encoding/json does not insist on), whose member names are all
// distinct (after unescaping: "s\u0075b" is "sub"), and returns its
// top-level members, appended to members, without decoding their values.
// Duplicate names are refused because parsers disagree on which one wins,
// which is how one token can mean two things to two verifiers.
//
// It checks and scans in one pass, as strictly as encoding/json.Valid
// (RFC 8259's grammar, and its limit of 10,000 levels of nesting) and
// utf8.Valid together, which FuzzScanObject checks it against: every JWT
// never seen before is read here, header and payload, and the three
// passes were a tenth of what such a JWT costs beyond its signature.
func scanObject(data []byte, members []member) ([]member, error) {
	s := objectScanner{data: data}
	s.skipSpace()
	if !s.consume('{') {
		if utf8.Valid(data) && json.Valid(data) {
			return nil, errNotObject
		}
		return nil, errNotJSON
	}
	first := len(members)
	var hashes map[uint64]bool // of the names, once there are namesInMapFrom
	duplicate := false         // told only once the whole object is known to be valid
	if s.skipSpace(); !s.consume('}') {
		for {
			s.skipSpace()
			name, ok := s.name()
			if !ok {
				return nil, errNotJSON
			}
			if hashes == nil && len(members)-first == namesInMapFrom {
				// Room for as many members as data can hold: neither is regrown.
				most := len(data) / len(`"":0,`)
				hashes = make(map[uint64]bool, most)
				members = slices.Grow(members, most)
				for _, m := range members[first:] {
					hashes[maphash.Bytes(nameSeed, m.name)] = true
				}
			}
			duplicate = duplicate || seen(members[first:], hashes, name)
			if hashes != nil {
				hashes[maphash.Bytes(nameSeed, name)] = true
			}
			if s.skipSpace(); !s.consume(':') {
				return nil, errNotJSON
			}
			s.skipSpace()
			start := s.pos
			if !s.value() {
				return nil, errNotJSON
			}
			members = append(members, member{name: name, value: data[start:s.pos]})
			if s.skipSpace(); s.consume('}') {
				break
			}
			if !s.consume(',') {
				return nil, errNotJSON
			}
		}
	}
	s.skipSpace()
	switch {
	case s.pos != len(data):
		return nil, errNotJSON
	case duplicate:
		return nil, errDuplicateMember
	}
	return members, nil
}

// seen reports whether name is among the members' names. With the hashes
// of their names, only a name whose hash is among them is compared with
// each (a duplicate, or a collision of 64-bit hashes: as good as never).
func seen(members []member, hashes map[uint64]bool, name []byte) bool {
	if hashes != nil && !hashes[maphash.Bytes(nameSeed, name)] {
		return false
	}
	for _, m := range members {
		if bytes.Equal(m.name, name) {
			return true
		}
	}
	return false
}

// objectScanner walks JSON, checking it as it goes.
type objectScanner struct {
	data []byte
	pos  int
}

func (s *objectScanner) skipSpace() {
	for s.pos < len(s.data) && spaceBytes[s.data[s.pos]] {
		s.pos++
	}
}

var spaceBytes = byteSet(" \t\n\r")

func (s *objectScanner) consume(c byte) bool {
	if s.pos < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// name reads a member name, unescaping it only when it has escapes.
func (s *objectScanner) name() ([]byte, bool) {
	start := s.pos
	escaped, ok := s.string()
	if !ok {
		return nil, false
	}
	raw := s.data[start:s.pos]
	if !escaped {
		return raw[1 : len(raw)-1], true
	}
	var name string
	if err := json.Unmarshal(raw, &name); err != nil {
		return nil, false
	}
	return []byte(name), true
}

// value moves past one valid JSON value of a member of the top-level
// object, and reports whether there was one.
func (s *objectScanner) value() bool {
	var open nesting // the arrays and objects open in the value
	for {
		if !s.scalarOrOpen(&open) {
			return false
		}
		// After a value: close what it ends, up to the next element.
		for {
			if open.depth == 0 {
				return true
			}
			s.skipSpace()
			if s.consume(',') {
				s.skipSpace()
				if open.inObject() && !s.memberName() {
					return false
				}
				break
			}
			if !s.consume(open.closer()) {
				return false
			}
			open.depth--
		}
	}
}

// scalarOrOpen moves past a scalar, or opens arrays and objects up to the
// first scalar in them, or up to one that is empty, which it closes.
func (s *objectScanner) scalarOrOpen(open *nesting) bool {
	for {
		if s.pos >= len(s.data) {
			return false
		}
		c := s.data[s.pos]
		if c != '[' && c != '{' {
			return s.scalar()
		}
		s.pos++
		if !open.push(c == '{') {
			return false
		}
		s.skipSpace()
		switch {
		case s.consume(open.closer()):
			open.depth--
			return true
		case c == '{' && !s.memberName():
			return false
		}
	}
}

// nesting is the arrays and objects open in a value, innermost last, as
// bits (1 for an object): the first 64 levels in a word, which needs no
// allocation, the deeper ones in more.
type nesting struct {
	first uint64
	more  []uint64
	depth int
}

// maxNesting is how deep arrays and objects may nest, the top-level
// object included: encoding/json's limit.
const maxNesting = 10000

// push opens an array or an object, unless that nests too deep.
func (n *nesting) push(object bool) bool {
	if 1+n.depth >= maxNesting { // 1: the top-level object
		return false
	}
	word, bit := n.word(n.depth)
	*word &^= bit
	if object {
		*word |= bit
	}
	n.depth++
	return true
}

// word is where the bit of a level is, growing more to hold it.
func (n *nesting) word(level int) (*uint64, uint64) {
	bit := uint64(1) << (level % 64)
	if level < 64 {
		return &n.first, bit
	}
	if i := level/64 - 1; i < len(n.more) {
		return &n.more[i], bit
	}
	n.more = append(n.more, 0)
	return &n.more[len(n.more)-1], bit
}

// inObject reports whether the innermost level open is an object.
func (n *nesting) inObject() bool {
	word, bit := n.word(n.depth - 1)
	return *word&bit != 0
}

// closer is what closes the innermost level open.
func (n *nesting) closer() byte {
	if n.inObject() {
		return '}'
	}
	return ']'
}

// memberName moves past a nested member's name and its colon, up to its
// value.
func (s *objectScanner) memberName() bool {
	if _, ok := s.string(); !ok {
		return false
	}
	s.skipSpace()
	if !s.consume(':') {
		return false
	}
	s.skipSpace()
	return true
}

// scalar moves past a string, a number, true, false or null.
func (s *objectScanner) scalar() bool {
	switch c := s.data[s.pos]; {
	case c == '"':
		_, ok := s.string()
		return ok
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return s.literal("true") || s.literal("false") || s.literal("null")
}

func (s *objectScanner) literal(word string) bool {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return false
	}
	s.pos += len(word)
	return true
}

// plainStringBytes are the bytes a string holds as they are: printable
// ASCII but for the quote and the backslash.
var plainStringBytes = func() (set [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		set[c] = c != '"' && c != '\\'
	}
	return set
}()

// string moves past a string: printable characters in valid UTF-8, and the
// escapes of RFC 8259 (whose \u escapes may name lone surrogates, as
// encoding/json allows). It tells whether the string has escapes.
func (s *objectScanner) string() (escaped, ok bool) {
	if !s.consume('"') {
		return false, false
	}
	for {
		// The plain bytes in a local index, which the loop keeps in a
		// register: most strings are nothing else.
		pos, data := s.pos, s.data
		for pos < len(data) && plainStringBytes[data[pos]] {
			pos++
		}
		s.pos = pos
		if pos == len(data) {
			return false, false
		}
		switch c := data[pos]; {
		case c == '"':
			s.pos++
			return escaped, true
		case c == '\\':
			if !s.escape() {
				return false, false
			}
			escaped = true
		case c < 0x20:
			return false, false
		default:
			r, size := utf8.DecodeRune(data[pos:])
			if r == utf8.RuneError && size == 1 {
				return false, false
			}
			s.pos += size
		}
	}
}

// escape moves past one escape sequence in a string.
func (s *objectScanner) escape() bool {
	if s.pos+1 >= len(s.data) {
		return false
	}
	switch s.data[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return true
	case 'u':
		if s.pos+6 > len(s.data) {
			return false
		}
		for _, h := range s.data[s.pos+2 : s.pos+6] {
			if !hexDigits[h] {
				return false
			}
		}
		s.pos += 6
		return true
	}
	return false
}

var hexDigits = byteSet("0123456789abcdefABCDEF")

// number moves past a number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *objectScanner) number() bool {
	s.consume('-')
	switch {
	case s.consume('0'):
	case !s.digits():
		return false
	}
	if s.consume('.') && !s.digits() {
		return false
	}
	if s.consume('e') || s.consume('E') {
		if !s.consume('+') {
			s.consume('-')
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits moves past one or more digits, and reports whether there was one.
func (s *objectScanner) digits() bool {
	start, pos := s.pos, s.pos
	for pos < len(s.data) && s.data[pos] >= '0' && s.data[pos] <= '9' {
		pos++
	}
	s.pos = pos
	return pos > start
}

// writeJSONString writes s as a JSON string: as it is when it needs no
// escape, as encoding/json writes it otherwise.
func writeJSONString(b *strings.Builder, s []byte) {
	for _, c := range s {
		if !plainStringBytes[c] && c < utf8.RuneSelf {
			quoted, _ := json.Marshal(string(s)) // a string always marshals
			b.Write(quoted)
			return
		}
	}
	b.WriteByte('"')
	b.Write(s)
	b.WriteByte('"')
}

// jsonString decodes a raw JSON value that must be a string.
func jsonString(raw []byte) (string, bool) {
	return jsonStringOf(raw, func(b []byte) string { return string(b) })
}

// jsonStringOf is jsonString, with text making the string of a value
// without escapes from its bytes.
func jsonStringOf(raw []byte, text func([]byte) string) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return text(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// jsonNumber decodes a raw JSON value that must be a finite number.
func jsonNumber(raw []byte) (float64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	if n, ok := smallInteger(raw); ok {
		return float64(n), true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

// smallInteger reads digits alone, up to 15 of them, as a JWT's dates are
// written: exactly the float64 ParseFloat would give, read for less.
func smallInteger(raw []byte) (int64, bool) {
	if len(raw) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = 10*n + int64(c-'0')
	}
	return n, true
}
