package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"hash/maphash"
	"slices"
	"strconv"
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
	errNotJSON          = errors.New("not valid JSON")
	errNotObject        = errors.New("not a JSON object")
	errDuplicateMember  = errors.New("a member name appears twice")
	errMalformedMembers = errors.New("malformed object")
)

// scanObject checks that data is exactly one valid JSON object, in valid
// UTF-8 (which encoding/json does not insist on), whose member names are all
// distinct (after unescaping: "s\u0075b" is "sub"), and returns its
// top-level members, appended to members, without decoding their values.
// Duplicate names are refused because parsers disagree on which one wins,
// which is how one token can mean two things to two verifiers.
func scanObject(data []byte, members []member) ([]member, error) {
	if !utf8.Valid(data) || !json.Valid(data) {
		return nil, errNotJSON
	}
	s := objectScanner{data: data}
	s.skipSpace()
	if !s.consume('{') {
		return nil, errNotObject
	}
	first := len(members)
	var hashes map[uint64]bool // of the names, once there are namesInMapFrom
	for {
		s.skipSpace()
		if s.consume('}') {
			return members, nil
		}
		if len(members) > first && !s.consume(',') {
			return nil, errMalformedMembers
		}
		s.skipSpace()
		name, err := s.name()
		if err != nil {
			return nil, err
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
		if seen(members[first:], hashes, name) {
			return nil, errDuplicateMember
		}
		if hashes != nil {
			hashes[maphash.Bytes(nameSeed, name)] = true
		}
		s.skipSpace()
		if !s.consume(':') {
			return nil, errMalformedMembers
		}
		s.skipSpace()
		members = append(members, member{name: name, value: s.value()})
	}
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

// objectScanner walks JSON already known to be valid, so it only has to
// find where things end.
type objectScanner struct {
	data []byte
	pos  int
}

func (s *objectScanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *objectScanner) consume(c byte) bool {
	if s.pos < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// name reads a member name, unescaping it only when it has escapes.
func (s *objectScanner) name() ([]byte, error) {
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return nil, errMalformedMembers
	}
	raw := s.data[s.pos:s.stringEnd()]
	s.pos += len(raw)
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1], nil
	}
	var name string
	if err := json.Unmarshal(raw, &name); err != nil {
		return nil, err
	}
	return []byte(name), nil
}

// stringEnd returns the index just past the string starting at pos.
func (s *objectScanner) stringEnd() int {
	for i := s.pos + 1; i < len(s.data); i++ {
		switch s.data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(s.data)
}

// value returns the raw JSON value at pos and moves past it.
func (s *objectScanner) value() []byte {
	start := s.pos
	depth := 0
	for s.pos < len(s.data) {
		switch c := s.data[s.pos]; c {
		case '"':
			s.pos = s.stringEnd()
			if depth == 0 {
				return s.data[start:s.pos]
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return s.data[start:s.pos]
			}
			depth--
			if depth == 0 {
				s.pos++
				return s.data[start:s.pos]
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return s.data[start:s.pos]
			}
		}
		s.pos++
	}
	return s.data[start:s.pos]
}

// jsonString decodes a raw JSON value that must be a string.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
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
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}
