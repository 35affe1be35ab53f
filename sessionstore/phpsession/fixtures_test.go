package phpsession

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// fixture is one case of testdata/fixtures/<serializer>.json, written by
// testdata/gen.php with real PHP.
type fixture struct {
	Name     string          `json:"name"`
	Encoded  []byte          `json:"encoded"` // base64 in the file
	Expected json.RawMessage `json:"expected"`
}

var serializers = []string{PHP, PHPSerialize, PHPBinary}

func loadFixtures(t *testing.T, dir, serializer string) []fixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, serializer+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var fs []fixture
	if err := json.Unmarshal(b, &fs); err != nil {
		t.Fatalf("%s.json: %v", serializer, err)
	}
	if len(fs) < 10 {
		t.Fatalf("%s.json has %d cases", serializer, len(fs))
	}
	return fs
}

// TestFixturesFromPHP decodes what PHP's own session_encode() wrote, for every
// serializer and every kind of value, and compares with the JSON gen.php
// derived from the PHP values. Object key order counts.
func TestFixturesFromPHP(t *testing.T) {
	for _, ser := range serializers {
		for _, f := range loadFixtures(t, "testdata/fixtures", ser) {
			got, err := Decode(f.Encoded, 0, ser)
			if err != nil {
				t.Errorf("%s/%s: %v\n%q", ser, f.Name, err, f.Encoded)
				continue
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Errorf("%s/%s: marshal: %v", ser, f.Name, err)
				continue
			}
			// Decode's top level is a map (marshalled in sorted order), so
			// compare it variable by variable; below that, order counts.
			var want map[string]json.RawMessage
			if err := json.Unmarshal(f.Expected, &want); err != nil {
				t.Fatal(err)
			}
			var gotVars map[string]json.RawMessage
			json.Unmarshal(b, &gotVars)
			if len(gotVars) != len(want) {
				t.Errorf("%s/%s: %d variables, want %d:\n got %s\nwant %s", ser, f.Name, len(gotVars), len(want), b, f.Expected)
			}
			for name, w := range want {
				if err := sameJSON(gotVars[name], w); err != nil {
					t.Errorf("%s/%s: %s: %v\n got %s\nwant %s", ser, f.Name, name, err, gotVars[name], w)
				}
			}
		}
	}
}

// sameJSON compares two JSON texts token by token: same structure and key
// order; numbers equal as numbers (PHP writes 2.0 and 1.0e+25, Go 2 and
// 1e+25), with the sign of zero.
func sameJSON(a, b []byte) error {
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	for {
		ta, ea := da.Token()
		tb, eb := db.Token()
		if errors.Is(ea, io.EOF) && errors.Is(eb, io.EOF) {
			return nil
		}
		if ea != nil || eb != nil {
			return errors.Join(ea, eb, errors.New("token stream differs"))
		}
		if na, ok := ta.(json.Number); ok {
			if nb, ok := tb.(json.Number); ok && sameNumber(na, nb) {
				continue
			}
		} else if ta == tb {
			continue
		}
		return errors.New("differs at " + tokenString(ta) + " vs " + tokenString(tb))
	}
}

func sameNumber(a, b json.Number) bool {
	if a == b {
		return true
	}
	ia, erra := strconv.ParseInt(string(a), 10, 64)
	ib, errb := strconv.ParseInt(string(b), 10, 64)
	if erra == nil && errb == nil { // beyond float64's exact range
		return ia == ib
	}
	fa, err1 := strconv.ParseFloat(string(a), 64)
	fb, err2 := strconv.ParseFloat(string(b), 64)
	return err1 == nil && err2 == nil && fa == fb && math.Signbit(fa) == math.Signbit(fb)
}

func tokenString(t json.Token) string {
	b, _ := json.Marshal(t)
	return string(b)
}

// TestFixturesAreWhatPHPWrites runs testdata/gen.php with php-cli and checks
// that it writes the checked-in fixtures byte for byte: they are PHP's output,
// not hand-made.
func TestFixturesAreWhatPHPWrites(t *testing.T) {
	php, err := exec.LookPath("php")
	if err != nil {
		t.Fatal("php not found: install the Debian package php-cli")
	}
	dir := t.TempDir()
	out, err := exec.Command(php, "testdata/gen.php", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("gen.php: %v\n%s", err, out)
	}
	for _, ser := range serializers {
		fresh, err := os.ReadFile(filepath.Join(dir, ser+".json"))
		if err != nil {
			t.Fatal(err)
		}
		stored, err := os.ReadFile(filepath.Join("testdata/fixtures", ser+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, stored) {
			t.Errorf("testdata/fixtures/%s.json is not what gen.php writes now: run php testdata/gen.php", ser)
		}
	}
}

// TestFieldOnFixtures reads the logged-in case's user ids at the paths
// session.user_key takes, for every serializer.
func TestFieldOnFixtures(t *testing.T) {
	for _, ser := range serializers {
		for _, f := range loadFixtures(t, "testdata/fixtures", ser) {
			if f.Name != "logged_in" {
				continue
			}
			data, err := Decode(f.Encoded, 0, ser)
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range map[string]string{"user": "42", "auth.user.id": "u-42", "auth.user.roles.0": "admin", "auth.at": "1765000000"} {
				if got, ok := Field(data, path); !ok || got != want {
					t.Errorf("%s: Field(%q) = %q, %v; want %q", ser, path, got, ok, want)
				}
			}
		}
	}
}
