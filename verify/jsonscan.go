package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// member is one top-level member of a JSON object: its name, unescaped, and
// its value as raw JSON. Both usually alias the scanned bytes.
type member struct {
	name  []byte
	value []byte
}

// maxMembers bounds the members of a JOSE header or JWT payload; Clerk's
// have about a dozen.
const maxMembers = 256

var (
	errNotJSON          = errors.New("not valid JSON")
	errNotObject        = errors.New("not a JSON object")
	errDuplicateMember  = errors.New("a member name appears twice")
	errTooManyMembers   = errors.New("too many members")
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
		for _, m := range members[first:] {
			if bytes.Equal(m.name, name) {
				return nil, errDuplicateMember
			}
		}
		if len(members)-first == maxMembers {
			return nil, errTooManyMembers
		}
		s.skipSpace()
		if !s.consume(':') {
			return nil, errMalformedMembers
		}
		s.skipSpace()
		members = append(members, member{name: name, value: s.value()})
	}
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
