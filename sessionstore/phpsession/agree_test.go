package phpsession

import (
	"bytes"
	"encoding/base64"
	"os/exec"
	"strings"
	"testing"
)

// phpAccepts asks PHP's own session_decode (testdata/accepts.php) which of
// inputs it accepts with serializer.
func phpAccepts(t *testing.T, serializer string, inputs [][]byte) []bool {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		t.Fatal("php not found: install the Debian package php-cli")
	}
	var stdin bytes.Buffer
	for _, in := range inputs {
		stdin.WriteString(base64.StdEncoding.EncodeToString(in) + "\n")
	}
	cmd := exec.Command(php, "testdata/accepts.php", serializer)
	cmd.Stdin = &stdin
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("accepts.php: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(inputs) {
		t.Fatalf("accepts.php answered %d of %d inputs: %s", len(lines), len(inputs), out)
	}
	ok := make([]bool, len(inputs))
	for i, l := range lines {
		ok[i] = l == "ok"
	}
	return ok
}

// TestAcceptsWhatPHPAccepts: on every hand-written input of the other tests,
// under every serializer, Decode succeeds exactly when PHP's session_decode
// does, except where Decode enforces a bound of its own (MaxDepth; PHP's is
// 4096) and php_serialize data that is not an array.
func TestAcceptsWhatPHPAccepts(t *testing.T) {
	var inputs [][]byte
	for _, cs := range [][]decodeCase{shapeCases, rejectCases} {
		for _, c := range cs {
			if !strings.Contains(c.want, "deeper") && c.ser != "igbinary" {
				inputs = append(inputs, []byte(c.in))
			}
		}
	}
	for _, s := range fuzzSeeds {
		inputs = append(inputs, []byte(s))
	}
	for _, ser := range serializers {
		php := phpAccepts(t, ser, inputs)
		for i, in := range inputs {
			if ser == PHPSerialize && len(in) > 0 && in[0] != 'a' && in[0] != 'N' {
				continue // PHP accepts any value, making $_SESSION a non-array; Decode refuses
			}
			_, err := Decode(in, 0, ser)
			if (err == nil) != php[i] {
				t.Errorf("%s %q: PHP accepts: %v; Decode: %v", ser, in, php[i], err)
			}
		}
	}
}
