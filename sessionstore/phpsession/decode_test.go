package phpsession

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %#v: %v", v, err)
	}
	return string(b)
}

// TestDecodeShapes pins the JSON shape of every kind of value on hand-written
// input (the PHP-made fixtures are in fixtures_test.go).
func TestDecodeShapes(t *testing.T) {
	for _, c := range shapeCases {
		got, err := Decode([]byte(c.in), 0, c.ser)
		if err != nil {
			t.Errorf("%s %q: %v", c.ser, c.in, err)
			continue
		}
		if s := mustJSON(t, got); s != c.want {
			t.Errorf("%s %q:\n got %s\nwant %s", c.ser, c.in, s, c.want)
		}
	}
}

type decodeCase struct{ ser, in, want string }

// shapeCases are inputs that decode, with their JSON.
var shapeCases = []decodeCase{
	{PHP, "", `{}`},
	{PHP, `visit|i:3;`, `{"visit":3}`},
	{PHP, `a|b:1;b|b:0;n|N;`, `{"a":true,"b":false,"n":null}`},
	{PHP, `f|a:5:{i:0;d:INF;i:1;d:-INF;i:2;d:NAN;i:3;d:-0;i:4;d:1.0E+25;}`, `{"f":[{"float":"INF"},{"float":"-INF"},{"float":"NAN"},-0,1e+25]}`},
	{PHP, "s|s:2:\"\xff\x00\";", `{"s":{"base64":"/wA="}}`},
	{PHP, `s|S:3:"\41b\5a";`, `{"s":"AbZ"}`},
	{PHP, `m|a:2:{s:1:"b";i:1;i:7;s:1:"x";}`, `{"m":{"b":1,"7":"x"}}`},
	{PHP, "o|O:1:\"U\":3:{s:2:\"id\";i:4;s:4:\"\x00*\x00p\";i:5;s:4:\"\x00U\x00q\";i:6;}", `{"o":{"class":"U","properties":{"id":4,"p:protected":5,"q:U:private":6}}}`},
	{PHP, `x|a:2:{i:0;i:1;i:1;i:2;}y|R:1;o|O:8:"stdClass":1:{s:4:"self";r:4;}o2|r:4;z|R:2;`, `{"o":{"class":"stdClass","properties":{"self":{"ref":"o"}}},"o2":{"ref":"o"},"x":[1,2],"y":{"ref":"x"},"z":1}`},
	{PHP, `c|C:3:"Foo":5:{hello}e|E:11:"Suit:Hearts";`, `{"c":{"class":"Foo","custom":"hello"},"e":{"enum":"Suit::Hearts"}}`},
	{PHPSerialize, `a:2:{s:1:"x";a:1:{i:0;i:1;}s:1:"y";R:2;}`, `{"x":[1],"y":{"ref":"x"}}`},
	{PHPSerialize, `a:1:{s:1:"x";R:1;}`, `{"x":{"ref":"$_SESSION"}}`},
	{PHPSerialize, `N;`, `{}`},
	{PHP, `x|a:2:{i:0;O:8:"stdClass":0:{}i:1;r:2;}e|E:11:"Suit:Hearts";f|r:4;`, `{"e":{"enum":"Suit::Hearts"},"f":{"enum":"Suit::Hearts"},"x":[{"class":"stdClass","properties":{}},{"ref":"x.0"}]}`},
	{PHPBinary, "\x05visiti:1;\x01xs:1:\"y\";", `{"visit":1,"x":"y"}`},
	{PHPBinary, "\x85visiti:1;", `{"visit":1}`},
	// As PHP: out-of-range ints saturate, bytes after php_serialize's array are ignored.
	{PHP, `x|i:99999999999999999999;y|i:-99999999999999999999;`, `{"x":9223372036854775807,"y":-9223372036854775808}`},
	{PHPSerialize, `a:1:{s:1:"x";i:1;}garbage`, `{"x":1}`}, // PHP 8.2 masks the old PS_BIN_UNDEF bit and reads on
	{PHP, `a|a:1:{s:4:"self";a:1:{i:0;R:1;}}`, `{"a":{"self":[{"ref":"a"}]}}`},
}

// rejectCases are inputs that do not decode, with part of the error.
var rejectCases = []decodeCase{
	{PHP, `visit`, "without '|'"},
	{PHP, `x|O:3:"F-o":0:{}`, "not a class name"},
	{PHP, `x|E:5:"F-o:A";`, "enum must be"},
	{PHP, `x|s:100:"a";`, "exceeds"},
	{PHP, `x|a:1000000000:{}`, "exceeds"},
	{PHP, `x|r:1;`, "reference to value 1 of 0"},
	{PHP, `x|R:5;`, "reference to value"},
	{PHP, `x|d:0x10;`, "malformed float"},
	{PHP, `x|q:1;`, "unknown type"},
	{PHP, `x|a:1:{d:1;i:1;}`, "array key"},
	{PHP, "x|" + strings.Repeat("a:1:{i:0;", MaxDepth+1) + "N;" + strings.Repeat("}", MaxDepth+1), "deeper"},
	{PHPSerialize, `i:1;`, "must be an array"},
	{PHP, `x|a:2:{i:0;i:5;i:1;r:2;}`, "not an object"},
	{PHP, `x|a:2:{i:0;a:0:{}i:1;r:2;}`, "not an object"},
	{PHPBinary, "\x7fab", "past the end"},
	{"igbinary", ``, "unknown serializer"},
}

func TestDecodeRejects(t *testing.T) {
	for _, c := range rejectCases {
		_, err := Decode([]byte(c.in), 0, c.ser)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %q: error %v, want one containing %q", c.ser, c.in, err, c.want)
		}
	}
	if _, err := Decode([]byte("1"), 768, PHP); err == nil || !strings.Contains(err.Error(), "flags 768") {
		t.Errorf("lock value's flags: %v", err)
	}
}

func zlibBytes(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestDecodeCompressed(t *testing.T) {
	raw := []byte(`big|s:30000:"` + strings.Repeat("x", 30000) + `";`)
	got, err := Decode(zlibBytes(raw), 2, PHP)
	if err != nil || len(got["big"].(string)) != 30000 {
		t.Fatalf("compressed: %v", err)
	}
	if _, err := Decode(raw, 2, PHP); err == nil {
		t.Error("flags 2 on uncompressed bytes decoded")
	}
	bomb := zlibBytes(make([]byte, MaxInflated+1))
	if _, err := Decode(bomb, 2, PHP); err == nil || !strings.Contains(err.Error(), "inflates to more than") {
		t.Errorf("zlib bomb of %d bytes: %v", len(bomb), err)
	}
}

func TestField(t *testing.T) {
	data, err := Decode([]byte("user|i:42;auth|a:2:{s:4:\"user\";O:4:\"User\":2:{s:2:\"id\";s:3:\"u-7\";s:6:\"\x00*\x00age\";d:1.5;}i:3;b:1;}n|N;"), 0, PHP)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"user": "42", "auth.user.id": "u-7", "auth.user.age": "1.5", "auth.3": "true"} {
		if got, ok := Field(data, path); !ok || got != want {
			t.Errorf("Field(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
	for _, path := range []string{"", "n", "auth", "auth.user", "nope", "user.x", "auth.user.id.x", "auth.4"} {
		if got, ok := Field(data, path); ok {
			t.Errorf("Field(%q) = %q, want not found", path, got)
		}
	}
}

// fuzzSeeds start FuzzDecode, under every serializer.
var fuzzSeeds = []string{
	`visit|i:3;`, `x|a:2:{i:0;i:1;i:1;i:2;}y|R:1;o|O:8:"stdClass":1:{s:4:"self";r:4;}o2|r:4;`,
	`f|a:3:{i:0;d:INF;i:1;d:-0;i:2;d:1.0E+25;}`, `c|C:3:"Foo":5:{hello}e|E:11:"Suit:Hearts";`,
	"o|O:1:\"U\":2:{s:4:\"\x00*\x00p\";i:5;s:4:\"\x00U\x00q\";S:1:\"\\41\";}",
	`a:2:{s:1:"x";a:1:{i:0;i:1;}s:1:"y";R:2;}`, "\x05visiti:1;",
}

// FuzzDecode: no input panics, and whatever decodes marshals to valid JSON
// and survives Field.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		for _, ser := range []string{PHP, PHPSerialize, PHPBinary} {
			f.Add([]byte(s), uint32(0), ser)
		}
	}
	f.Add(zlibBytes([]byte(`a|i:1;`)), uint32(2), PHP)
	f.Fuzz(func(t *testing.T, in []byte, flags uint32, ser string) {
		data, err := Decode(in, flags, ser)
		if err != nil {
			return
		}
		b, err := json.Marshal(data)
		if err != nil || !json.Valid(b) {
			t.Fatalf("decoded %q but JSON failed: %v", in, err)
		}
		for name := range data {
			Field(data, name+".a.0")
		}
	})
}

// TestDeclaredCountsDoNotAllocate: 63 nested arrays each declaring as many
// elements as the rest of a 1 MB input could hold allocate a bounded amount
// before the decoder finds the input does not hold them (about 300 MB if each
// declared count were allocated up front).
func TestDeclaredCountsDoNotAllocate(t *testing.T) {
	head := "x|" + strings.Repeat("a:150000:{i:0;", 63)
	in := []byte(head + "N;" + strings.Repeat(" ", 1<<20-len(head)))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Decode(in, 0, PHP)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("decoded")
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
		t.Errorf("decoding 1 MB allocated %d MB", got>>20)
	}
}
