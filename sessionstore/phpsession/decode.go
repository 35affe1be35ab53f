// Package phpsession decodes PHP session data as PHP's session handlers store
// it in memcached, for reading, not for writing back: the serializers php
// (name|value...), php_serialize (one serialized array) and php_binary (length
// byte, name, value), memcache's zlib compression (flags 2), and every value
// serialize() writes. Input is treated as hostile: errors instead of panics,
// nesting bounded at MaxDepth, no allocation beyond what the input's own bytes
// justify, and inflated values capped at MaxInflated.
//
// Decode accepts what PHP's session_decode accepts (a test asks php-cli), with
// these exceptions: nesting deeper than MaxDepth; php_serialize data that is
// not an array (PHP then makes $_SESSION a non-array); and since no classes are
// known here, enums (E:) whose class or case does not exist are accepted.
package phpsession

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Serializers (session.serialize_handler).
const (
	PHP          = "php"
	PHPSerialize = "php_serialize"
	PHPBinary    = "php_binary"
)

// Bounds.
const (
	MaxDepth    = 64      // nested arrays and objects
	MaxInflated = 8 << 20 // bytes a value may have, compressed values once inflated
	maxPathLen  = 128     // bytes of a Ref's path
	maxPrealloc = 1024    // elements allocated ahead on a declared count
	flagZlib    = 2       // pecl memcache's MMC_COMPRESSED client flag
)

// Decode turns one stored session value (raw bytes and memcached client flags as
// stored by the handler) into JSON-ready data: map of session variable name ->
// value. serializer is PHP's session.serialize_handler ("" means php). Values are
// the types value.go documents. An empty value is an empty session. The result
// shares no memory with value.
func Decode(value []byte, flags uint32, serializer string) (map[string]any, error) {
	if flags&^flagZlib != 0 {
		return nil, fmt.Errorf("phpsession: client flags %d are not a session value's (0, or 2 when compressed)", flags)
	}
	if flags&flagZlib != 0 {
		var err error
		if value, err = inflate(value); err != nil {
			return nil, err
		}
	}
	if len(value) > MaxInflated { // memcached's items are 1 MB unless raised
		return nil, fmt.Errorf("phpsession: value of %d bytes is over the %d-byte limit", len(value), MaxInflated)
	}
	// Every value but R: takes a slot, and each ends in ';' or '}', so
	// counting them sizes the table once (strings holding them overcount).
	n := bytes.Count(value, []byte{';'}) + bytes.Count(value, []byte{'}'})
	d := decoder{in: value, slots: make([]slot, 0, min(n, maxPrealloc)+1)}
	var err error
	switch serializer {
	case PHP, "":
		err = d.sessionPHP()
	case PHPSerialize:
		err = d.sessionSerialize()
	case PHPBinary:
		err = d.sessionBinary()
	default:
		return nil, fmt.Errorf("phpsession: unknown serializer %q (php, php_serialize or php_binary)", serializer)
	}
	if err != nil {
		return nil, err
	}
	return d.out, nil
}

// inflate undoes pecl memcache's compress2, refusing output beyond MaxInflated.
func inflate(b []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("phpsession: flags say zlib-compressed, but: %v", err)
	}
	var out bytes.Buffer
	n, err := out.ReadFrom(io.LimitReader(zr, MaxInflated+1))
	if err != nil {
		return nil, fmt.Errorf("phpsession: inflating: %v", err)
	}
	if n > MaxInflated {
		return nil, fmt.Errorf("phpsession: value inflates to more than %d bytes", MaxInflated)
	}
	return out.Bytes(), nil
}

// SyntaxError is malformed input: what was expected and at which byte offset
// (of the inflated value).
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("phpsession: at byte %d: %s", e.Offset, e.Msg)
}

// slot is one entry of PHP's unserialize table, which r:N and R:N index from 1:
// every value gets one in the order parsing starts it, except R: itself and
// array keys. parent and key say where the value sits, for Ref paths.
type slot struct {
	v      any
	parent int32 // slot index of the containing array or object; -1 top level
	key    any   // int64 or string; for a top-level variable its name
}

type decoder struct {
	in    []byte
	pos   int
	out   map[string]any
	slots []slot
	paths map[int32]string  // Ref paths by slot, computed when first referred to
	open  []int32           // slots of the arrays being parsed, outermost first
	keys  map[string]string // interned array keys: a list of records repeats them
	// copied counts the bytes references add to the output (copied scalars,
	// Ref paths): a few input bytes each, so it is bounded by MaxInflated
	// apart from the input, or `R:1;` repeated after a long string would
	// make the JSON of 8 MiB of input terabytes long.
	copied int
}

// Interning bounds.
const (
	maxInterned    = 256 // distinct keys
	maxInternedLen = 32  // bytes of one
)

// intern returns b as a string, shared with earlier equal short keys.
func (d *decoder) intern(b []byte) string {
	if len(b) > maxInternedLen {
		return string(b)
	}
	if s, ok := d.keys[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if d.keys == nil {
		d.keys = make(map[string]string)
	}
	if len(d.keys) < maxInterned {
		d.keys[s] = s
	}
	return s
}

func (d *decoder) errf(format string, args ...any) error {
	return &SyntaxError{Offset: d.pos, Msg: fmt.Sprintf(format, args...)}
}

// sessionPHP decodes name|value pairs; a later duplicate name wins, as in PHP.
func (d *decoder) sessionPHP() error {
	d.out = make(map[string]any)
	for d.pos < len(d.in) {
		i := bytes.IndexByte(d.in[d.pos:], '|')
		if i < 0 {
			return d.errf("variable name without '|'")
		}
		name := string(d.in[d.pos : d.pos+i])
		d.pos += i + 1
		v, err := d.value(0, -1, name)
		if err != nil {
			return err
		}
		d.out[name] = v
	}
	return nil
}

// sessionBinary decodes (length byte, name, value) triples. PHP masks off the
// length byte's top bit (PS_BIN_UNDEF, unused since PHP 5.4) and always reads
// a value.
func (d *decoder) sessionBinary() error {
	d.out = make(map[string]any)
	for d.pos < len(d.in) {
		n := int(d.in[d.pos] & 0x7f)
		if d.pos+1+n >= len(d.in) {
			return d.errf("variable name of %d bytes runs past the end", n)
		}
		name := string(d.in[d.pos+1 : d.pos+1+n])
		d.pos += 1 + n
		v, err := d.value(0, -1, name)
		if err != nil {
			return err
		}
		d.out[name] = v
	}
	return nil
}

// sessionSerialize decodes one serialized array whose entries are the session
// variables (int keys as their decimal strings).
func (d *decoder) sessionSerialize() error {
	d.out = make(map[string]any)
	if len(d.in) == 0 {
		return nil
	}
	v, err := d.value(0, -1, nil)
	if err != nil {
		return err
	}
	// Bytes after the value are ignored: PHP's decoder does not look at them.
	switch v := v.(type) {
	case nil: // N;: PHP starts an empty session
	case Array:
		for _, e := range v {
			d.out[keyString(e.Key)] = e.Value
		}
	default:
		// PHP accepts it, and $_SESSION is then not an array: no variables.
		return &SyntaxError{Offset: 0, Msg: fmt.Sprintf("php_serialize data must be an array, found a %T", v)}
	}
	return nil
}

// value parses one serialized value at depth, sitting in slot parent under key.
func (d *decoder) value(depth int, parent int32, key any) (any, error) {
	if d.pos+1 >= len(d.in) {
		return nil, d.errf("value expected, found end of data")
	}
	t := d.in[d.pos]
	if t == 'R' {
		return d.ref()
	}
	// Every other value takes an unserialize-table slot before its contents.
	me := int32(len(d.slots))
	d.slots = append(d.slots, slot{parent: parent, key: key})
	v, err := d.parse(t, depth, me)
	if err != nil {
		return nil, err
	}
	d.slots[me].v = v
	return v, nil
}

func (d *decoder) parse(t byte, depth int, me int32) (any, error) {
	if t == 'N' {
		if d.in[d.pos+1] != ';' {
			return nil, d.errf("N not followed by ';'")
		}
		d.pos += 2
		return nil, nil
	}
	if d.in[d.pos+1] != ':' {
		return nil, d.errf("type %q not followed by ':'", t)
	}
	d.pos += 2
	switch t {
	case 'b':
		if d.pos+1 < len(d.in) && (d.in[d.pos] == '0' || d.in[d.pos] == '1') && d.in[d.pos+1] == ';' {
			d.pos += 2
			return d.in[d.pos-2] == '1', nil
		}
		return nil, d.errf("bool must be b:0; or b:1;")
	case 'i':
		n, err := d.int(';')
		return n, err
	case 'd':
		return d.float()
	case 's', 'S':
		b, err := d.str(t == 'S', ';')
		if err != nil {
			return nil, err
		}
		return stringValue(b), nil
	case 'a':
		return d.array(depth, me)
	case 'O':
		return d.object(depth, me)
	case 'C':
		return d.custom()
	case 'E':
		return d.enum()
	case 'r':
		return d.ref()
	}
	d.pos -= 2
	return nil, d.errf("unknown type %q", t)
}

// stringValue is b as a string if it is valid UTF-8, else as Bytes. Either way
// it is a copy: callers may reuse the input.
func stringValue(b []byte) any {
	if utf8.Valid(b) {
		return string(b)
	}
	return Bytes(bytes.Clone(b))
}

// int parses a decimal int64 followed by end.
func (d *decoder) int(end byte) (int64, error) {
	start := d.pos
	i := d.pos
	if i < len(d.in) && (d.in[i] == '-' || d.in[i] == '+') {
		i++
	}
	digits := i
	for i < len(d.in) && d.in[i] >= '0' && d.in[i] <= '9' {
		i++
	}
	if i == digits || i >= len(d.in) || d.in[i] != end {
		return 0, d.errf("integer followed by %q expected", end)
	}
	// By hand: strconv.ParseInt would need a string, one allocation per int.
	// Out of range saturates, as PHP's unserialize does (with a warning).
	neg := d.in[start] == '-'
	var u uint64
	for _, c := range d.in[digits:i] {
		if u > math.MaxInt64/10+1 {
			u = math.MaxUint64 // saturated; more digits cannot bring it back
			break
		}
		u = u*10 + uint64(c-'0')
	}
	d.pos = i + 1
	switch {
	case neg && u > math.MaxInt64:
		return math.MinInt64, nil
	case u > math.MaxInt64:
		return math.MaxInt64, nil
	case neg:
		return -int64(u), nil
	}
	return int64(u), nil
}

// count parses a non-negative length or element count followed by end; each
// counted thing needs at least minBytes more bytes, so a count the remaining
// input cannot hold is refused before anything is allocated for it.
func (d *decoder) count(end byte, minBytes int) (int, error) {
	start := d.pos
	n, err := d.int(end)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > int64(len(d.in)-d.pos)/int64(minBytes) {
		d.pos = start
		return 0, d.errf("length %d exceeds the %d bytes left", n, len(d.in)-d.pos)
	}
	return int(n), nil
}

func (d *decoder) float() (any, error) {
	// PHP's longest float is 24 bytes; look no further than 64, so that a
	// float without ';' does not cost a scan of the rest of the input.
	i := bytes.IndexByte(d.in[d.pos:min(d.pos+65, len(d.in))], ';')
	if i < 0 {
		return nil, d.errf("float followed by ';' expected")
	}
	s := d.in[d.pos : d.pos+i]
	switch string(s) {
	case "INF":
		d.pos += i + 1
		return Float("INF"), nil
	case "-INF":
		d.pos += i + 1
		return Float("-INF"), nil
	case "NAN":
		d.pos += i + 1
		return Float("NAN"), nil
	}
	// PHP's grammar: [+-]digits[.digits][eE[+-]digits]; strconv alone would
	// also take hex, "Inf", underscores.
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E') {
			return nil, d.errf("malformed float %q", s)
		}
	}
	f, err := strconv.ParseFloat(string(s), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil, d.errf("malformed float %q", s)
	}
	d.pos += i + 1
	if math.IsInf(f, 0) { // 1e999: PHP makes it INF too
		return floatName(f), nil
	}
	return f, nil
}

// str parses len:"bytes" followed by end. escaped is S:, whose bytes may be
// \hh escapes (each counting as one byte of len).
func (d *decoder) str(escaped bool, end byte) ([]byte, error) {
	n, err := d.count(':', 1)
	if err != nil {
		return nil, err
	}
	if d.pos >= len(d.in) || d.in[d.pos] != '"' {
		return nil, d.errf(`'"' expected`)
	}
	d.pos++
	var b []byte
	if !escaped {
		if len(d.in)-d.pos < n+2 {
			return nil, d.errf("string of %d bytes runs past the end", n)
		}
		b = d.in[d.pos : d.pos+n]
		d.pos += n
	} else {
		b = make([]byte, 0, n)
		for range n {
			if d.pos >= len(d.in) {
				return nil, d.errf("escaped string runs past the end")
			}
			c := d.in[d.pos]
			if c != '\\' {
				b = append(b, c)
				d.pos++
				continue
			}
			if d.pos+2 >= len(d.in) {
				return nil, d.errf("escape runs past the end")
			}
			hi, lo := unhex(d.in[d.pos+1]), unhex(d.in[d.pos+2])
			if hi < 0 || lo < 0 {
				return nil, d.errf("bad escape")
			}
			b = append(b, byte(hi<<4|lo))
			d.pos += 3
		}
	}
	if d.pos+1 >= len(d.in) || d.in[d.pos] != '"' || d.in[d.pos+1] != end {
		return nil, d.errf(`'"%c' expected after a string's bytes`, end)
	}
	d.pos += 2
	return b, nil
}

// array parses n:{key value ...}; the shortest entry ("i:0;N;") is 6 bytes.
func (d *decoder) array(depth int, me int32) (any, error) {
	if depth >= MaxDepth {
		return nil, d.errf("nested deeper than %d", MaxDepth)
	}
	n, err := d.count(':', 6)
	if err != nil {
		return nil, err
	}
	if err := d.expect('{'); err != nil {
		return nil, err
	}
	// A declared count only sizes the first allocation, up to maxPrealloc:
	// otherwise 64 nested arrays each declaring what the rest of the input
	// could hold would allocate 64 times that before failing.
	a := make(Array, 0, min(n, maxPrealloc))
	d.open = append(d.open, me)
	defer func() { d.open = d.open[:len(d.open)-1] }()
	for range n {
		k, err := d.key()
		if err != nil {
			return nil, err
		}
		v, err := d.value(depth+1, me, k)
		if err != nil {
			return nil, err
		}
		a = append(a, Entry{Key: k, Value: v})
	}
	return a, d.expect('}')
}

// key parses an array key or property name: i:N; or s:len:"...";.
func (d *decoder) key() (any, error) {
	if d.pos+2 >= len(d.in) || d.in[d.pos+1] != ':' {
		return nil, d.errf("array key expected")
	}
	t := d.in[d.pos]
	d.pos += 2
	switch t {
	case 'i':
		return d.int(';')
	case 's', 'S':
		b, err := d.str(t == 'S', ';')
		if err != nil {
			return nil, err
		}
		return d.intern(b), nil
	}
	d.pos -= 2
	return nil, d.errf("array key must be i: or s:, found %q", t)
}

func (d *decoder) expect(c byte) error {
	if d.pos >= len(d.in) || d.in[d.pos] != c {
		return d.errf("%q expected", c)
	}
	d.pos++
	return nil
}

// object parses len:"Class":n:{name value ...}.
func (d *decoder) object(depth int, me int32) (any, error) {
	if depth >= MaxDepth {
		return nil, d.errf("nested deeper than %d", MaxDepth)
	}
	class, err := d.className()
	if err != nil {
		return nil, err
	}
	n, err := d.count(':', 6)
	if err != nil {
		return nil, err
	}
	if err := d.expect('{'); err != nil {
		return nil, err
	}
	o := &Object{Class: string(class), Props: make([]Prop, 0, min(n, maxPrealloc))}
	// The slot must hold the object before its properties parse, so that a
	// property referring back to it (r:) finds it.
	d.slots[me].v = o
	for range n {
		k, err := d.key()
		if err != nil {
			return nil, err
		}
		p := unmangle(k)
		v, err := d.value(depth+1, me, p.Name)
		if err != nil {
			return nil, err
		}
		p.Value = v
		o.Props = append(o.Props, p)
	}
	return o, d.expect('}')
}

// unmangle splits PHP's property name mangling: "\0*\0name" is protected,
// "\0Class\0name" private to Class, anything else public.
func unmangle(k any) Prop {
	s, ok := k.(string)
	if !ok {
		return Prop{Name: keyString(k), Visibility: "public"}
	}
	if len(s) > 2 && s[0] == 0 {
		if i := strings.IndexByte(s[1:], 0); i > 0 {
			class, name := s[1:1+i], s[2+i:]
			if class == "*" {
				return Prop{Name: name, Visibility: "protected"}
			}
			return Prop{Name: name, Visibility: "private", Class: class}
		}
	}
	return Prop{Name: s, Visibility: "public"}
}

// className parses len:"Class": as PHP does for O: and C:, refusing names
// PHP refuses.
func (d *decoder) className() ([]byte, error) {
	start := d.pos
	class, err := d.str(false, ':')
	if err != nil {
		return nil, err
	}
	if !validClassName(class) {
		d.pos = start
		return nil, d.errf("%q is not a class name", class)
	}
	return class, nil
}

// validClassName is PHP's zend_is_valid_class_name: letters, digits, '_',
// '\\' and bytes from 0x80 up, at least one.
func validClassName(b []byte) bool {
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '\\' || c >= 0x80) {
			return false
		}
	}
	return len(b) > 0
}

// custom parses len:"Class":len:{payload} (Serializable::serialize output).
func (d *decoder) custom() (any, error) {
	class, err := d.className()
	if err != nil {
		return nil, err
	}
	n, err := d.count(':', 1)
	if err != nil {
		return nil, err
	}
	if err := d.expect('{'); err != nil {
		return nil, err
	}
	if len(d.in)-d.pos < n+1 {
		return nil, d.errf("custom payload of %d bytes runs past the end", n)
	}
	payload := d.in[d.pos : d.pos+n]
	d.pos += n
	return Custom{Class: string(class), Data: stringValue(payload)}, d.expect('}')
}

// enum parses len:"Class:Case";.
func (d *decoder) enum() (any, error) {
	start := d.pos
	b, err := d.str(false, ';')
	if err != nil {
		return nil, err
	}
	i := bytes.IndexByte(b, ':')
	if i <= 0 || i == len(b)-1 || !validClassName(b[:i]) {
		d.pos = start
		return nil, d.errf("enum must be \"Class:Case\"")
	}
	return Enum{Class: string(b[:i]), Case: string(b[i+1:])}, nil
}

// ref parses the N; of r:N; or R:N;. A scalar is copied; an array or object
// becomes a Ref to where it sits. What it adds to the output is counted in
// d.copied.
func (d *decoder) ref() (any, error) {
	start := d.pos
	v, err := d.ref1()
	if err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case string:
		d.copied += len(v)
	case Bytes:
		d.copied += len(v)
	case Ref:
		d.copied += len(v.Path)
	default:
		d.copied += 8
	}
	if d.copied > MaxInflated {
		d.pos = start
		return nil, d.errf("references copy more than %d bytes into the output", MaxInflated)
	}
	return v, nil
}

// ref1 is ref without the output accounting.
func (d *decoder) ref1() (any, error) {
	if d.pos >= len(d.in) { // "r:" at the end of the data
		return nil, d.errf("reference number expected, found end of data")
	}
	if d.in[d.pos] == 'R' {
		if d.pos+1 >= len(d.in) || d.in[d.pos+1] != ':' {
			return nil, d.errf("R not followed by ':'")
		}
		d.pos += 2
	}
	start := d.pos
	n, err := d.int(';')
	if err != nil {
		return nil, err
	}
	// The slot being filled (for r:) is the newest; it may not refer to itself.
	filled := int64(len(d.slots))
	if d.in[start-2] == 'r' {
		filled--
	}
	if n < 1 || n > filled {
		d.pos = start
		return nil, d.errf("reference to value %d of %d", n, filled)
	}
	s := &d.slots[n-1]
	if d.in[start-2] == 'r' {
		// r: is an object handle: PHP refuses one to anything else.
		switch s.v.(type) {
		case *Object, Custom:
			return Ref{Path: d.path(int32(n - 1))}, nil
		case Enum, Ref: // an enum case is a value; a Ref in a slot came from an r:
			return s.v, nil
		}
		d.pos = start
		return nil, d.errf("r:%d refers to a value that is not an object", n)
	}
	switch s.v.(type) {
	case Array, *Object, Custom:
		return Ref{Path: d.path(int32(n - 1))}, nil
	case nil:
		if d.isOpen(int32(n - 1)) {
			// An array still being parsed: the reference points at an ancestor.
			return Ref{Path: d.path(int32(n - 1))}, nil
		}
	}
	return s.v, nil // scalars and Refs are values: copy
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// isOpen reports whether slot i is an array whose contents are still being
// parsed: an ancestor of the value being parsed now.
func (d *decoder) isOpen(i int32) bool {
	return slices.Contains(d.open, i)
}

// path is slot i's place as dotted keys, computed once per slot and cut at
// maxPathLen so it costs at most MaxDepth short steps.
func (d *decoder) path(i int32) string {
	if p, ok := d.paths[i]; ok {
		return p
	}
	s := &d.slots[i]
	var p string
	switch {
	case s.parent < 0 && s.key == nil:
		p = "$_SESSION" // php_serialize's whole-session array
	case s.parent < 0:
		p = keyString(s.key)
	default:
		pp := d.path(s.parent)
		if pp == "$_SESSION" {
			p = keyString(s.key)
		} else {
			p = pp + "." + keyString(s.key)
		}
	}
	if len(p) > maxPathLen {
		cut := maxPathLen
		for cut > 0 && !utf8.RuneStart(p[cut]) {
			cut--
		}
		p = p[:cut] + "…"
	}
	if d.paths == nil {
		d.paths = make(map[int32]string)
	}
	d.paths[i] = p
	return p
}
