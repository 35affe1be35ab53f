package phpsession

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
)

// The value types Decode returns. Scalars are plain Go values: string (valid
// UTF-8), int64, float64 (finite; JSON writes a whole one without ".0", so
// 2.0 and 2 look alike there), bool and nil. Everything else is one of the
// types below, each marshalling to the JSON shape its comment shows.

// Bytes is a PHP string that is not valid UTF-8: {"base64": "..."}.
type Bytes []byte

// Float is a float JSON has no number for (INF, -INF, NAN): {"float": "INF"}.
type Float string

// Entry is one key and value of an Array; Key is an int64 or a string.
type Entry struct {
	Key   any
	Value any
}

// Array is a PHP array in its order. A list (keys 0..n-1 in order) marshals as
// a JSON array, anything else as a JSON object in key order (int keys as their
// decimal strings).
type Array []Entry

// Prop is one property of an Object. Name is unmangled; Visibility is "public",
// "protected" or "private", and Class names the declaring class of a private one.
type Prop struct {
	Name       string
	Visibility string
	Class      string
	Value      any
}

// Object is a PHP object: {"class": "User", "properties": {...}}, properties in
// order, named as print_r names them: "name", "name:protected",
// "name:Class:private".
type Object struct {
	Class string
	Props []Prop
}

// Custom is an object serialized by its class's Serializable::serialize (C:):
// {"class": "Foo", "custom": payload}; the payload is the class's own format,
// a string (or {"base64": ...}) as PHP stored it.
type Custom struct {
	Class string
	Data  any // string or Bytes
}

// Enum is a PHP 8.1+ enum case (E:): {"enum": "Suit::Hearts"}.
type Enum struct {
	Class string
	Case  string
}

// Ref is a reference (r: or R:) to an array or object decoded earlier, shown by
// where that value sits: {"ref": "cart.items"}; "$_SESSION" is the whole
// session. References to scalars are decoded as copies of the scalar. The path
// is cut at maxPathLen bytes, ending in "…", so that many references to one
// deep place cannot blow up the output.
type Ref struct {
	Path string
}

// MarshalJSON implements json.Marshaler.
func (b Bytes) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(b))+13)
	out = append(out, `{"base64":"`...)
	out = base64.StdEncoding.AppendEncode(out, b)
	return append(out, `"}`...), nil
}

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"float": string(f)})
}

// MarshalJSON implements json.Marshaler.
func (e Enum) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"enum": e.Class + "::" + e.Case})
}

// MarshalJSON implements json.Marshaler.
func (r Ref) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"ref": r.Path})
}

// MarshalJSON implements json.Marshaler.
func (c Custom) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Class  string `json:"class"`
		Custom any    `json:"custom"`
	}{c.Class, c.Data})
}

// MarshalJSON implements json.Marshaler.
func (a Array) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	err := a.writeTo(&buf)
	return buf.Bytes(), err
}

// MarshalJSON implements json.Marshaler.
func (o *Object) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	err := o.writeTo(&buf)
	return buf.Bytes(), err
}

func (a Array) writeTo(buf *bytes.Buffer) error {
	if a.isList() {
		buf.WriteByte('[')
		for i, e := range a {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeJSON(buf, e.Value); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
		return nil
	}
	buf.WriteByte('{')
	for i, e := range a {
		if i > 0 {
			buf.WriteByte(',')
		}
		writeKey(buf, keyString(e.Key))
		if err := writeJSON(buf, e.Value); err != nil {
			return err
		}
	}
	buf.WriteByte('}')
	return nil
}

func (o *Object) writeTo(buf *bytes.Buffer) error {
	buf.WriteString(`{"class":`)
	writeString(buf, o.Class)
	buf.WriteString(`,"properties":{`)
	for i, p := range o.Props {
		if i > 0 {
			buf.WriteByte(',')
		}
		writeKey(buf, p.DisplayName())
		if err := writeJSON(buf, p.Value); err != nil {
			return err
		}
	}
	buf.WriteString("}}")
	return nil
}

// DisplayName is the property's name as print_r shows it.
func (p Prop) DisplayName() string {
	switch p.Visibility {
	case "protected":
		return p.Name + ":protected"
	case "private":
		return p.Name + ":" + p.Class + ":private"
	}
	return p.Name
}

func (a Array) isList() bool {
	for i, e := range a {
		if k, ok := e.Key.(int64); !ok || k != int64(i) {
			return false
		}
	}
	return true
}

func keyString(k any) string {
	if i, ok := k.(int64); ok {
		return strconv.FormatInt(i, 10)
	}
	return k.(string)
}

func writeKey(buf *bytes.Buffer, k string) {
	writeString(buf, k)
	buf.WriteByte(':')
}

func writeString(buf *bytes.Buffer, s string) {
	b, _ := json.Marshal(s) // a string always marshals
	buf.Write(b)
}

// writeJSON marshals v into buf; nested Arrays and Objects write into the
// same buffer rather than through json.Marshal, which would copy and
// re-validate each level's output: quadratic in the depth.
func writeJSON(buf *bytes.Buffer, v any) error {
	var b []byte
	var err error
	switch v := v.(type) {
	case Array:
		return v.writeTo(buf)
	case *Object:
		return v.writeTo(buf)
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) { // not produced by Decode; be safe
			return writeJSON(buf, floatName(v))
		}
		b, err = json.Marshal(v)
	default:
		b, err = json.Marshal(v)
	}
	if err != nil {
		return err
	}
	buf.Write(b)
	return nil
}

func floatName(f float64) Float {
	switch {
	case math.IsNaN(f):
		return "NAN"
	case f > 0:
		return "INF"
	}
	return "-INF"
}
