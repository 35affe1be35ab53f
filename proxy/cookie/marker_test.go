package cookie

import (
	"strings"
	"testing"
	"time"
)

const (
	keyOld = "old-key-0123456789abcdef0123456789abcdef"
	keyNew = "new-key-0123456789abcdef0123456789abcdef"
	sid    = "3vdj8srh32rjq4kfeitc4hk4l5"
)

func TestMarkerRoundTrip(t *testing.T) {
	m, err := NewMarker("SGRENEW", []string{keyOld}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "SGRENEW" {
		t.Errorf("Name = %q", m.Name())
	}
	at := time.Now().Add(-time.Minute).Truncate(time.Second)
	v, err := m.Encode(sid, at)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(v, sid) {
		t.Error("marker spells out the session id")
	}
	if got, ok := m.RenewedAt(v, sid); !ok || !got.Equal(at) {
		t.Errorf("RenewedAt = %v, %v; want %v, true", got, ok, at)
	}
	if _, ok := m.RenewedAt(v, "4vdj8srh32rjq4kfeitc4hk4l5"); ok {
		t.Error("marker accepted for another id")
	}
	if _, err := m.Encode("bad id", at); err == nil {
		t.Error("Encode accepted an invalid id")
	}
}

func TestMarkerRotation(t *testing.T) {
	old, _ := NewMarker("SGRENEW", []string{keyOld}, time.Hour)
	rotated, err := NewMarker("SGRENEW", []string{keyNew, keyOld}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := NewMarker("SGRENEW", []string{keyNew}, time.Hour)
	now := time.Now()

	vOld, _ := old.Encode(sid, now)
	if _, ok := rotated.RenewedAt(vOld, sid); !ok {
		t.Error("a marker signed with the old key no longer verifies during rotation")
	}
	vNew, _ := rotated.Encode(sid, now)
	if _, ok := fresh.RenewedAt(vNew, sid); !ok {
		t.Error("the rotated marker is not signed with the new (first) key")
	}
	if _, ok := old.RenewedAt(vNew, sid); ok {
		t.Error("the old key alone verifies a marker signed with the new key")
	}
}

func TestMarkerRejects(t *testing.T) {
	m, _ := NewMarker("SGRENEW", []string{keyOld}, time.Hour)
	now := time.Now()
	m.now = func() time.Time { return now }
	v, _ := m.Encode(sid, now)

	tampered := []byte(v)
	tampered[len(tampered)/2] ^= 1
	other, _ := NewMarker("OTHER", []string{keyOld}, time.Hour) // the name is part of the MAC
	vOther, _ := other.Encode(sid, now)
	expired, _ := m.Encode(sid, now.Add(-2*time.Hour))
	future, _ := m.Encode(sid, now.Add(2*time.Hour))
	for name, val := range map[string]string{
		"tampered":        string(tampered),
		"truncated":       v[:len(v)-4],
		"other cookie":    vOther,
		"older than max":  expired,
		"from the future": future,
		"empty":           "",
		"garbage":         "not-a-marker",
	} {
		if _, ok := m.RenewedAt(val, sid); ok {
			t.Errorf("%s marker accepted", name)
		}
	}
}

func TestNewMarkerKeys(t *testing.T) {
	if _, err := NewMarker("SGRENEW", []string{"short"}, time.Hour); err == nil {
		t.Error("a key under 32 bytes was accepted")
	}
	if _, err := NewMarker("SGRENEW", nil, 0); err == nil {
		t.Error("zero max age was accepted")
	}
	a, err := NewMarker("SGRENEW", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewMarker("SGRENEW", nil, time.Hour)
	v, _ := a.Encode(sid, time.Now())
	if _, ok := a.RenewedAt(v, sid); !ok {
		t.Error("random-key marker does not verify its own value")
	}
	if _, ok := b.RenewedAt(v, sid); ok {
		t.Error("two random-key markers share a key")
	}
}
