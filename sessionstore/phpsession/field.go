package phpsession

import (
	"strconv"
	"strings"
)

// Field returns the scalar at a dotted path ("user", "auth.user.id") of decoded
// data as a string: the first segment names a session variable, each further one
// an array key (int keys by their decimal form) or an object property (by its
// unmangled name, any visibility). Strings are returned as they are, ints and
// floats in decimal, bools as "true"/"false". It reports false for a missing
// path, null, and anything that is not a scalar. It does not follow references.
func Field(data map[string]any, path string) (string, bool) {
	name, rest, more := strings.Cut(path, ".")
	v, ok := data[name]
	for ok && more {
		var seg string
		seg, rest, more = strings.Cut(rest, ".")
		v, ok = child(v, seg)
	}
	if !ok {
		return "", false
	}
	return scalarString(v)
}

// child looks seg up in an Array or Object; a later duplicate key wins, as in PHP.
func child(v any, seg string) (any, bool) {
	var out any
	found := false
	switch c := v.(type) {
	case Array:
		for _, e := range c {
			if keyIs(e.Key, seg) {
				out, found = e.Value, true
			}
		}
	case *Object:
		for _, p := range c.Props {
			if p.Name == seg {
				out, found = p.Value, true
			}
		}
	}
	return out, found
}

func keyIs(k any, seg string) bool {
	switch k := k.(type) {
	case string:
		return k == seg
	case int64:
		var buf [20]byte
		return string(strconv.AppendInt(buf[:0], k, 10)) == seg
	}
	return false
}

func scalarString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case Bytes:
		return string(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case Float:
		return string(v), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}
