package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/scenario"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

func TestStat(t *testing.T) {
	if s := statOf([]float64{5, 1, 3}); s != (stat{3, 1, 5}) {
		t.Fatalf("odd: %+v", s)
	}
	if s := statOf([]float64{4, 1, 3, 2}); s != (stat{2.5, 1, 4}) {
		t.Fatalf("even: %+v", s)
	}
	if got := statOf([]float64{2, 1, 3}).fmtRange("%.0f"); got != "2 (1–3)" {
		t.Fatalf("fmtRange %q", got)
	}
}

func TestSamplesInterpolate(t *testing.T) {
	t0 := time.Unix(100, 0)
	s := []sample{{at: t0, cpu: 0, link: 0}, {at: t0.Add(time.Second), cpu: time.Second, link: 1000}}
	got, err := at(s, t0.Add(250*time.Millisecond))
	if err != nil || got.cpu != 250*time.Millisecond || got.link != 250 {
		t.Fatalf("at 250ms: %+v, %v", got, err)
	}
	if _, err := at(s, t0.Add(2*time.Second)); err == nil {
		t.Fatal("a time after the last sample was interpolated")
	}
}

func TestOutputRate(t *testing.T) {
	stop := time.Unix(0, 1e9)
	var ev []verify.Event
	for i := int64(0); i < 3000; i++ { // 1000 before from, 2000 in the 2 s after it
		ev = append(ev, verify.Event{ProcessedNS: i * 1e6})
	}
	r, err := outputRate(ev, stop)
	if err != nil || r < 999 || r > 1001 {
		t.Fatalf("drain rate %v, %v; want 1000/s", r, err)
	}
}

// The report renders medians, ratios over the floor (gap over gap) and failures.
func TestReport(t *testing.T) {
	cell := Cell{StateMiB: 16, LinkMbit: 100, Rate: 200}
	res := &Results{Repeats: 3, BandwidthMBps: map[int]float64{100: 10}, Cells: []Cell{cell}}
	add := func(method string, gap float64, wire int64, errText string) {
		res.Runs = append(res.Runs, Run{Cell: cell, Method: method, StreamGapMs: gap, WireBytes: wire, MovedBytes: 2 * wire,
			EventsIn: 10, EventsOut: 10, Error: errText})
	}
	for _, g := range []float64{900, 1000, 1100} {
		add(scenario.MethodFloor, g, 10e6, "") // floor: 1000 ms + 10 MB at 10 MB/s = 2000 ms
		add(scenario.MethodFtwin, 2*g, 10e6, "")
	}
	add(scenario.MethodRestart, 0, 0, "it broke")
	var b bytes.Buffer
	if err := res.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"(2000 ms)", "| 2000 (1800–2200) | 1.00 |", "0/1 failed: it broke"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	b.Reset()
	if err := res.WriteSVG(&b); err != nil || !strings.Contains(b.String(), "</svg>") {
		t.Fatalf("svg: %v", err)
	}
	if res.OK() {
		t.Fatal("results with a failed run are OK")
	}
}
