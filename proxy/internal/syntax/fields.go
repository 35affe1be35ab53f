package syntax

import (
	"bufio"
	"bytes"
	"net/textproto"
)

// MaxFields is the most header lines SplitFields takes; heads with more
// are left to net/http.
const MaxFields = 32

// Field locates one header line in a head: the name is head[Start:Colon],
// the value head[VS:VE].
type Field struct{ Start, Colon, VS, VE int }

// BufferedHead finds a message head that br has already buffered, without
// reading it: head is every line up to the blank one, each with its CRLF,
// and head[:first] is the start line. ok is false when the blank line is
// not buffered yet, or the start line does not end in CRLF. The head
// takes len(head)+2 bytes of br, with the blank line.
func BufferedHead(br *bufio.Reader) (head []byte, first int, ok bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, 0, false
	}
	head = buf[:end+2]
	first = lineEnd(head, 0)
	return head, first, first >= 0
}

// lineEnd returns where the line starting at head[i] ends, at its CRLF;
// -1 for a line that does not end in CRLF (a bare LF, which textproto
// would also take as a line end, or no end at all).
func lineEnd(head []byte, i int) int {
	e := bytes.IndexByte(head[i:], '\n')
	if e <= 0 || head[i+e-1] != '\r' {
		return -1
	}
	return i + e - 1
}

// SplitFields splits the header lines of head, from head[i] to its end
// (each line ending in CRLF, the blank line not included), into fields,
// as textproto.Reader.ReadMIMEHeader reads them: a name up to the first
// colon, a value without leading or trailing spaces and tabs. It reports
// false for a head that ReadMIMEHeader would read differently or refuse
// — a line without CRLF, a continuation line, a name that is not a
// token, a control byte in a value — or that has more lines than fields.
func SplitFields(head []byte, i int, fields []Field) (n int, ok bool) {
	for ; i < len(head); n++ {
		e := lineEnd(head, i)
		if e < 0 || n == len(fields) {
			return 0, false
		}
		line := head[i:e]
		colon := bytes.IndexByte(line, ':')
		// colon 0 also catches a leading space or tab: no colon comes
		// first in a continuation line that has a name after it.
		if colon <= 0 || !FieldName(line[:colon]) || !FieldValue(line[colon+1:]) {
			return 0, false
		}
		ve := len(line)
		for ve > colon+1 && (line[ve-1] == ' ' || line[ve-1] == '\t') {
			ve--
		}
		vs := colon + 1
		for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
			vs++
		}
		fields[n] = Field{i, i + colon, i + vs, i + ve}
		i = e + 2
	}
	return n, true
}

// Name returns f's name in head.
func (f Field) Name(head []byte) []byte { return head[f.Start:f.Colon] }

// Value returns f's value in head.
func (f Field) Value(head []byte) []byte { return head[f.VS:f.VE] }

// FillHeader adds fields to h as textproto does: canonical names, values
// in order. s is string(head): names already in canonical form and every
// value are substrings of it, so the whole head costs one string, and
// single values share one backing array: vals when it has room for one
// per field (the caller's, allocated with what it belongs to), else a new
// one.
func FillHeader(h map[string][]string, s string, head []byte, fields []Field, vals []string) {
	if len(vals) < len(fields) {
		vals = make([]string, len(fields))
	}
	for _, f := range fields {
		key := s[f.Start:f.Colon]
		if !canonical(f.Name(head)) {
			key = textproto.CanonicalMIMEHeaderKey(key)
		}
		v := s[f.VS:f.VE]
		if old, seen := h[key]; seen {
			h[key] = append(old, v)
			continue
		}
		one := vals[:1:1]
		vals = vals[1:]
		one[0] = v
		h[key] = one
	}
}

// Get is http.Header.Get for a key already in canonical form: the same
// lookup without canonicalizing the key again on every call.
func Get(h map[string][]string, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// FixPragma does what net/http does to a head with "Pragma: no-cache" and
// no Cache-Control (RFC 7234 5.4): adds "Cache-Control: no-cache".
func FixPragma(h map[string][]string) {
	if pv, ok := h["Pragma"]; ok && pv[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
}

// canonical reports whether the token k is in canonical form: an upper
// case letter first and after each hyphen, lower case elsewhere.
func canonical(k []byte) bool {
	upper := true
	for _, c := range k {
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// HasToken reports whether the comma-separated list v holds tok, as
// httpguts.HeaderValuesContainsToken reads one value: ignoring the spaces
// and tabs around each element, and ASCII case only (strings.EqualFold
// would also take "clo\u017fe" for "close", which net/http does not).
func HasToken[T string | []byte](v T, tok string) bool {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		t := v[:i]
		v = v[min(i+1, len(v)):]
		s, e := 0, len(t)
		for s < e && (t[s] == ' ' || t[s] == '\t') {
			s++
		}
		for e > s && (t[e-1] == ' ' || t[e-1] == '\t') {
			e--
		}
		if asciiEqualFold(t[s:e], tok) {
			return true
		}
	}
	return false
}

// asciiEqualFold reports whether a and b are equal, ignoring ASCII case.
func asciiEqualFold[T string | []byte](a T, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
