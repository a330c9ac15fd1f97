package fog

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/fleet"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

func TestDefaultPolicyParses(t *testing.T) {
	p, err := placement.Parse(DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 3 || p.Budget != 2 {
		t.Errorf("policy %+v", p)
	}
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestPerMinuteAndFlaps(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ms := []Move{
		{Twin: "a", By: "demo", Start: at(0), End: at(10)},
		{Twin: "b", By: "demo", Start: at(0), End: at(12)},
		{Twin: "a", By: "demo", Start: at(15), End: at(30)}, // back within the 20 s cooldown
		{Twin: "c", By: "drain", Start: at(80), End: at(90)},
		{Twin: "d", By: "demo", Start: at(80), End: at(95), Err: "rolled back"},
	}
	if n := perMinute(ms); n != 3 {
		t.Errorf("per minute %d, want 3 (10, 12, 30 s)", n)
	}
	f := flaps(ms, 20*time.Second)
	if len(f) != 1 || !strings.HasPrefix(f[0], "a moved again after 15s") {
		t.Errorf("flaps %v", f)
	}
	if f := flaps(ms[:2], 20*time.Second); len(f) != 0 {
		t.Errorf("flaps %v, want none", f)
	}
}

// The picture is well-formed SVG with a row per twin.
func TestPicture(t *testing.T) {
	r := Result{Start: t0, End: t0.Add(time.Minute), Series: map[string][]Point{
		"tw00": {{t0, "fog1", 20}, {t0.Add(30 * time.Second), "cloud", 250}},
		"tw01": {{t0, "fog2", 30}},
	}, Hosts: map[string][]Point{"fog1": {{t0, "fog1", 0.9}}}, Timeline: []Event{{t0.Add(time.Second), "fog1 <loaded>"}}}
	var b bytes.Buffer
	if err := r.Picture(&b); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	dec := xml.NewDecoder(strings.NewReader(svg))
	rows := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			rows++
		}
	}
	if rows != 2+3 {
		t.Errorf("%d polylines, want a latency line per twin and a CPU line per host", rows)
	}
	if !strings.Contains(svg, "&lt;loaded&gt;") {
		t.Error("the timeline's text is not escaped")
	}
}

func TestOK(t *testing.T) {
	ok := Result{Verdicts: []fleet.TwinVerdict{{Twin: "a", In: 1, Complete: true, Report: verify.Report{EventsOut: 1}}},
		Moves: []Move{{Result: "committed"}, {Result: "rolled back", Err: "quiesce: ..."}}}
	if !ok.OK() {
		t.Error("a clean rollback fails the run")
	}
	bad := ok
	bad.Moves = append(append([]Move{}, ok.Moves...), Move{Result: "rollback failed"})
	if bad.OK() {
		t.Error("a failed rollback passes")
	}
	bad = ok
	bad.Flaps = []string{"a moved 3 times"}
	if bad.OK() {
		t.Error("flapping passes")
	}
	bad = ok
	bad.Unsettled = "fog: after 4m0s only 2 of [a b c] run on fog1"
	if bad.OK() {
		t.Error("twins not home after the oscillation pass")
	}
}
