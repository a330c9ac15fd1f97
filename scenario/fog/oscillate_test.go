package fog

import (
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/placement"
)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// A recorded oscillation: fast flips for 40 s (nothing should follow them), then the load on at
// 40 s and off at 100 s.
func flipLog() []Flip {
	var fl []Flip
	for i := range 10 {
		fl = append(fl, Flip{Time: at(float64(4 * i)), On: i%2 == 0, Fast: true})
	}
	return append(fl, Flip{Time: at(40), On: true}, Flip{Time: at(100), On: false})
}

func TestAnalyseFiringsAndRates(t *testing.T) {
	dec := func(s float64, rule, twin string) placement.Decision {
		return placement.Decision{Time: at(s), Rule: rule, Twin: twin}
	}
	out := func(twin string, s, e float64) Move {
		return Move{Twin: twin, From: "fog1", To: "cloud", Rule: "shed-hot-fog", By: "demo", Result: "committed", Start: at(s), End: at(e)}
	}
	home := func(twin string, s, e float64) Move {
		return Move{Twin: twin, From: "cloud", To: "fog1", Rule: "return-home", By: "demo", Result: "committed", Start: at(s), End: at(e)}
	}
	ds := []placement.Decision{
		dec(47, "shed-hot-fog", "a"), dec(47, "shed-hot-fog", "b"), dec(56, "shed-hot-fog", "c"), dec(70, "shed-hot-fog", "c"), // c rolled back, retried
		dec(112, "return-home", "a"), dec(113, "return-home", "b"), dec(121, "return-home", "c"),
	}
	ms := []Move{
		out("a", 47, 55), out("b", 47, 56),
		{Twin: "c", From: "fog1", To: "cloud", Rule: "shed-hot-fog", By: "demo", Result: "rolled back", Err: "quiesce: timeout", Start: at(56), End: at(60)},
		out("c", 70, 78),
		home("a", 112, 120), home("b", 113, 121), home("c", 121, 131),
		{Twin: "d", From: "fog2", To: "cloud", Rule: "drain", By: "drain", Result: "committed", Start: at(150), End: at(160)},
	}
	r := Analyse(ms, ds, flipLog(), 30*time.Second, 4*time.Second)
	if r.Migrations != 6 || r.RolledBack != 1 || r.Flips != 12 {
		t.Fatalf("migrations %d, rolled back %d, flips %d: want 6, 1, 12", r.Migrations, r.RolledBack, r.Flips)
	}
	if r.PerTwin["a"] != 2 || r.PerTwin["c"] != 2 || r.PerTwin["d"] != 0 {
		t.Errorf("per twin %v", r.PerTwin)
	}
	if len(r.Firings) != 2 {
		t.Fatalf("firings %+v, want 2 (the retry is the same firing)", r.Firings)
	}
	shed, ret := r.Firings[0], r.Firings[1]
	if shed.Rule != "shed-hot-fog" || shed.Took() != 31*time.Second || shed.Fired.Sub(shed.Flip) != 7*time.Second || len(shed.Twins) != 3 || len(shed.Moved) != 3 {
		t.Errorf("shed firing %+v took %v, want 47 s → 78 s = 31 s, 7 s after the flip at 40 s", shed, shed.Took())
	}
	if ret.Took() != 19*time.Second || ret.Fired.Sub(ret.Flip) != 12*time.Second {
		t.Errorf("return firing took %v (%v after the flip), want 19 s (12 s)", ret.Took(), ret.Fired.Sub(ret.Flip))
	}
	// From the first flip (0 s) to the last migration (131 s): 6 in 131 s; busy 31+19 = 50 s.
	if d := r.PerMinute - 6/(131.0/60); d > 1e-9 || d < -1e-9 {
		t.Errorf("per minute %v", r.PerMinute)
	}
	if d := r.BusyPerMinute - 6/(50.0/60); d > 1e-9 || d < -1e-9 {
		t.Errorf("busy per minute %v, want %v", r.BusyPerMinute, 6/(50.0/60))
	}
	if r.MaxPerMinute != 4 {
		t.Errorf("max per minute %d, want 4 (78, 120, 121, 131 s)", r.MaxPerMinute)
	}
	if len(r.Flaps) != 0 {
		t.Errorf("flaps %v, want none", r.Flaps)
	}
}

func TestAnalyseFlapping(t *testing.T) {
	mv := func(twin, from, to string, s, e float64) Move {
		return Move{Twin: twin, From: from, To: to, By: "demo", Result: "committed", Start: at(s), End: at(e)}
	}
	for _, c := range []struct {
		name     string
		cooldown time.Duration
		moves    []Move
		want     string
	}{
		{"again within the cooldown", 30 * time.Second, []Move{mv("a", "fog1", "cloud", 50, 58), mv("a", "cloud", "fog1", 70, 78)}, "a moved again 20s after its last move began (cooldown 30s)"},
		{"out and back within a fast flip", time.Second, []Move{mv("a", "fog1", "cloud", 50, 58), mv("a", "cloud", "fog1", 60, 68)}, "a went fog1→cloud and back within 2s"},
		{"out and back in the fast part", time.Second, []Move{mv("a", "fog1", "cloud", 2, 8), mv("a", "cloud", "fog1", 20, 28)}, "a went fog1→cloud and back while the load flipped every 4s"},
		{"out and back a cycle apart", 30 * time.Second, []Move{mv("a", "fog1", "cloud", 50, 58), mv("a", "cloud", "fog1", 112, 120), mv("a", "fog1", "cloud", 170, 178)}, ""},
		{"a rollback between is no move", 30 * time.Second, []Move{mv("a", "fog1", "cloud", 50, 58), {Twin: "a", From: "cloud", To: "fog1", By: "demo", Result: "rolled back", Err: "x", Start: at(60), End: at(62)}}, ""},
		{"the drain's moves are not the controller's", 30 * time.Second, []Move{mv("a", "fog1", "cloud", 50, 58), {Twin: "a", From: "cloud", To: "fog2", By: "drain", Result: "committed", Start: at(60), End: at(65)}}, ""},
	} {
		r := Analyse(c.moves, nil, flipLog(), c.cooldown, 4*time.Second)
		got := strings.Join(r.Flaps, "; ")
		if got != c.want {
			t.Errorf("%s: flaps %q, want %q", c.name, got, c.want)
		}
	}
}
