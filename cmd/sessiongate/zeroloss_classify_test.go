package main

import (
	"testing"
	"time"
)

// TestZLPHPInternal checks the zero-loss test's classifier: only PHP's own
// failures of requests sessiongate had let through before it saw the node go
// are excused, and the answer that follows from one.
func TestZLPHPInternal(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	restart := &zlOutage{node: 1, fault: "restart", from: ms(0), to: ms(100), seenDown: ms(20), seenBack: ms(100)}
	pause := &zlOutage{node: 1, fault: "pause", from: ms(5000), to: ms(6000), seenDown: ms(5100), seenBack: ms(6000)}
	unseen := &zlOutage{node: 1, fault: "pause", from: ms(9000), to: ms(10000)} // sessiongate never marked it down
	outages := []*zlOutage{restart, pause, unseen}
	lockFail := "logged out: Failed to write session lock: CONNECTION FAILURE | Failed to read session data: memcached"
	rec := func(start, ss, end int, kind string) zlRecord {
		return zlRecord{start: ms(start), ss: ms(ss), req: ms(ss), end: ms(end), kind: kind, lost: "x", id: "a", sent: "a"}
	}
	for _, c := range []struct {
		name   string
		r      zlRecord
		prev   *zlRecord
		prevEx bool
		want   bool
	}{
		{"arrived before seen down, lock failed while down", rec(-30, 10, 40, lockFail), nil, false, true},
		{"arrived before seen down, read empty just after back", rec(-200, 250, 300, "lost: PHP read the session empty"), nil, false, true},
		{"arrived before seen down, new id while down", rec(-50, 30, 60, "lost: PHP gave a new id"), nil, false, true},
		{"arrived after seen down: sessiongate's to hold", rec(25, 50, 60, lockFail), nil, false, false},
		{"read long after the return: sessiongate's to repair", rec(-200, 700, 720, "lost: PHP read the session empty"), nil, false, false},
		{"session_start just before the kill, still running at it", rec(-80, -10, 30, lockFail), nil, false, true},
		{"answered before the kill", rec(-80, -50, -5, lockFail), nil, false, false},
		{"no answer", func() zlRecord { r := rec(-30, 0, 10030, ""); r.err, r.lost = "timeout", ""; return r }(), nil, false, false},
		{"lost update is never excused", rec(-30, 10, 40, "lost update: PHP read an older copy"), nil, false, false},
		{"another PHP error", rec(-30, 10, 40, "logged out: Cannot send session cookie"), nil, false, false},
		{"write failed too", rec(-30, 10, 40, "lost: PHP read the session empty; write failed: x"), nil, false, false},
		{"could not save, in flight at the kill", rec(-300, -250, 40, zlNotSaved+": error saving session to memcached: CONNECTION FAILURE"), nil, false, true},
		{"could not save, arrived after seen down: sessiongate's to hold", rec(25, 30, 60, zlNotSaved+": error saving session to memcached: CONNECTION FAILURE"), nil, false, false},
		{"new id and could not save, in flight at the kill", rec(-30, 10, 40, zlNewID+"; "+zlNotSaved+": error saving session to memcached: CONNECTION FAILURE"), nil, false, true},
		{"lost update and could not save", rec(-30, 10, 40, "lost update: PHP read an older copy; "+zlNotSaved+": error saving session to memcached: CONNECTION FAILURE"), nil, false, false},
		{"new id for the session an excused new-id answer that could not save made up",
			rec(45, 200, 230, zlNewID), &zlRecord{kind: zlNewID + "; " + zlNotSaved + ": x"}, true, true},
		{"could not save for another reason", rec(-300, -250, 40, zlNotSaved+": Failed to write session data (memcached)"), nil, false, false},
		{"arrived during a pause: sessiongate's to hold", rec(5050, 5200, 5300, lockFail), nil, false, false},
		{"arrived before a pause, read empty during it", rec(4990, 4995, 6010, "lost: PHP read the session empty"), nil, false, true},
		{"arrived before a pause, read long after it", rec(4990, 6700, 6710, "lost: PHP read the session empty"), nil, false, false},
		{"arrived before an unseen pause, read empty during it", rec(8979, 8985, 10006, "lost: PHP read the session empty"), nil, false, true},
		{"arrived during an unseen pause", rec(9020, 9025, 10006, "lost: PHP read the session empty"), nil, false, false},
		{"arrived before an unseen pause, session_start after it", rec(8979, 10010, 10020, "lost: PHP read the session empty"), nil, false, false},
		{"arrived before an unseen pause, lost update", rec(8979, 8985, 10006, "lost update: PHP read an older copy"), nil, false, false},
		{"new id for the cookie an excused logged-out answer set",
			func() zlRecord { r := rec(45, 200, 230, "lost: PHP gave a new id"); r.sent = "b"; return r }(),
			&zlRecord{kind: lockFail}, true, true},
		{"new id for a cookie the previous answer set, previous not excused",
			func() zlRecord { r := rec(45, 200, 230, "lost: PHP gave a new id"); r.sent = "b"; return r }(),
			&zlRecord{kind: lockFail}, false, false},
		{"new id for the session an excused new-id answer made up",
			rec(45, 200, 230, "lost: PHP gave a new id"), &zlRecord{kind: "lost: PHP gave a new id"}, true, true},
		{"new id for the session a new-id answer made up, previous not excused",
			rec(45, 200, 230, "lost: PHP gave a new id"), &zlRecord{kind: "lost: PHP gave a new id"}, false, false},
		{"read empty after an excused new-id answer: sessiongate's to repair",
			rec(45, 700, 730, "lost: PHP read the session empty"), &zlRecord{kind: "lost: PHP gave a new id"}, true, false},
	} {
		if got := zlPHPInternal(c.r, c.prev, c.prevEx, outages) != ""; got != c.want {
			t.Errorf("%s: PHP-internal = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestZLOutageSeen checks that an outage takes sessiongate's "down" and
// "up" lines for its node from its own time only.
func TestZLOutageSeen(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	at := func(ms int) string { return t0.Add(time.Duration(ms) * time.Millisecond).Format(time.RFC3339Nano) }
	line := func(ms int, what, node string) string {
		return "time=" + at(ms) + ` level=WARN msg="memcached node ` + what + `" node=` + node + "\n"
	}
	for _, c := range []struct {
		name           string
		log            string
		wantDown, back int // ms after t0; -1: not seen
	}{
		{"seen during the pause", line(300, "down", "a") + line(1010, "up", "a"), 300, 1010},
		{"another node's", line(300, "down", "b") + line(1010, "up", "b"), -1, -1},
		{"before the pause", line(-500, "down", "a") + line(-200, "up", "a"), -1, -1},
		{"a stall 10 s later", line(11000, "down", "a") + line(11250, "up", "a"), -1, -1},
		{"noticed just after the resume", line(1100, "down", "a") + line(1150, "up", "a"), 1100, 1150},
	} {
		o := &zlOutage{addr: "a", fault: "pause", from: t0, to: t0.Add(time.Second)}
		o.seen(c.log)
		for _, x := range []struct {
			what string
			got  time.Time
			want int
		}{{"down", o.seenDown, c.wantDown}, {"back", o.seenBack, c.back}} {
			if want := t0.Add(time.Duration(x.want) * time.Millisecond); x.want < 0 && !x.got.IsZero() || x.want >= 0 && !x.got.Equal(want) {
				t.Errorf("%s: seen %s at %v, want %d ms", c.name, x.what, x.got, x.want)
			}
		}
	}
}

// TestZLKillCutShort checks that only the killed backend's head-only answer
// to a request in flight at the kill is excused.
func TestZLKillCutShort(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	k := zlKill{backend: "lamp02", at: ms(0), done: ms(30)}
	rec := func(start, end int, backend, err string) zlRecord {
		return zlRecord{start: ms(start), end: ms(end), backend: backend, err: err}
	}
	for _, c := range []struct {
		name string
		r    zlRecord
		want bool
	}{
		{"head only, in flight at the kill", rec(-40, 20, "lamp02", errHeadOnly.Error()), true},
		{"head only, sent during the kill", rec(10, 35, "lamp02", errHeadOnly.Error()), true},
		{"head only from another backend", rec(-40, 20, "lamp01", errHeadOnly.Error()), false},
		{"head only, ended before the kill", rec(-40, -5, "lamp02", errHeadOnly.Error()), false},
		{"head only, sent after the kill", rec(31, 60, "lamp02", errHeadOnly.Error()), false},
		{"another failure at the kill", rec(-40, 20, "lamp02", "unexpected EOF"), false},
	} {
		if got := k.cutShort(c.r) != ""; got != c.want {
			t.Errorf("%s: excused = %v, want %v", c.name, got, c.want)
		}
	}
}
