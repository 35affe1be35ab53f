package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// scalar is implemented by config types that parse themselves from one
// YAML scalar (e.g. Replicas, which accepts "all" or a number).
type scalar interface {
	parseScalar(s string) error
}

// defaulter is implemented by optional sections (pointer fields) that need
// defaults filled in when the section appears in the file.
type defaulter interface {
	setDefaults()
}

// decoder walks a yaml.Node tree into a struct by its `yaml` tags. It is
// written by hand rather than using yaml.v3's Decode so that every problem —
// unknown key, wrong type, bad duration — is collected (not just the first)
// and reported with the line of the key that caused it.
type decoder struct {
	file     string
	lines    map[string]int
	problems *Problems
}

func (d *decoder) add(line int, key, format string, args ...any) {
	d.problems.add(d.file, line, key, fmt.Sprintf(format, args...))
}

var durationType = reflect.TypeOf(time.Duration(0))

// decode fills v from n. path is the dotted key path used in messages.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if isNull(n) {
		return // an empty value keeps the default
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
			if df, ok := v.Interface().(defaulter); ok {
				df.setDefaults()
			}
		}
		d.decode(n, v.Elem(), path)
		return
	}
	// A struct that parses a scalar (AccessLog's "off") may also be
	// written as a mapping of its keys.
	if s, ok := v.Addr().Interface().(scalar); ok && (n.Kind == yaml.ScalarNode || v.Kind() != reflect.Struct) {
		if n.Kind != yaml.ScalarNode {
			d.add(n.Line, path, "expected a single value, got %s", kindName(n))
			return
		}
		if err := s.parseScalar(n.Value); err != nil {
			d.add(n.Line, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.add(n.Line, path, "expected a list, got %s", kindName(n))
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(out)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.add(n.Line, path, "expected a mapping of keys, got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		if seen[k.Value] {
			d.add(k.Line, key, "duplicate key")
			continue
		}
		seen[k.Value] = true
		idx, ok := fields[k.Value]
		if !ok {
			d.add(k.Line, key, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		d.lines[key] = k.Line
		d.decode(val, v.Field(idx), key)
	}
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.add(n.Line, path, "expected a single value, got %s", kindName(n))
		return
	}
	s := n.Value
	switch {
	case v.Type() == durationType:
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.add(n.Line, path, "%q is not a duration (use e.g. 500ms, 2s, 24m)", s)
			return
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			d.add(n.Line, path, "%q is not true or false", s)
			return
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			d.add(n.Line, path, "%q is not a whole number", s)
			return
		}
		v.SetInt(i)
	default:
		// A programming error: a config field of a type this decoder does not know.
		panic(fmt.Sprintf("config: field %s has unsupported type %s", path, v.Type()))
	}
}

// structFields maps yaml tag names to field indexes.
func structFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		m[tag] = i
	}
	return m
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names the closest known key when the unknown one looks like a typo.
func suggest(key string, fields map[string]int) string {
	best, bestDist := "", 3
	for name := range fields {
		if dd := editDistance(key, name); dd < bestDist || (dd == bestDist && name < best) {
			best, bestDist = name, dd
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance; keys are short so O(len²) is fine.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
