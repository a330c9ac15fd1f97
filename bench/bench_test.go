package bench

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
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

// The replay section: the pauses' medians and ranges, the ratio over stop-and-copy paired by
// repeat, and the goal checks, met and missed.
func TestReportReplay(t *testing.T) {
	big := Cell{StateMiB: 512, LinkMbit: 100, Rate: 200}
	small := Cell{StateMiB: 16, LinkMbit: 0, Rate: 200}
	res := &Results{Repeats: 3, Broker: "apache", BandwidthMBps: map[int]float64{0: 1000, 100: 11}, Cells: []Cell{small, big}}
	ok := func(c Cell, method string, rep int, gap float64) Run {
		return Run{Cell: c, Method: method, Repeat: rep, StreamGapMs: gap, EventsIn: 10, EventsOut: 10}
	}
	replay := func(c Cell, rep int, gap, snap, frozen, cut, steady, during float64) Run {
		x := ok(c, scenario.MethodReplay, rep, gap)
		x.SnapshotPauseMs, x.FrozenMs, x.CutoverPauseMs, x.CatchUpMs, x.Replayed = snap, frozen, cut, 900, 400
		x.SteadyP99Ms, x.MoveP99Ms = steady, during
		x.DigestChecked, x.DigestEqual, x.SourceDigest, x.TargetDigest = true, true, "d", "d"
		return x
	}
	for i, g := range []float64{25000, 26000, 27000} {
		res.Runs = append(res.Runs, ok(big, scenario.MethodFtwin, i, g), ok(small, scenario.MethodFtwin, i, 1500))
	}
	res.Runs = append(res.Runs,
		// 512 MiB: gaps 200, 250, 300 ms against bounds 250, 250, 310: all met; ratios 125, 104, 90.
		replay(big, 0, 200, 180, 120, 40, 20, 50),
		replay(big, 1, 250, 210, 140, 60, 20, 70),
		replay(big, 2, 300, 230, 210, 90, 20, 200), // latency: 200 > 2×20 + 90
		// 16 MiB: a gap of 400 ms against a bound of 250 ms, a cutover of 180 ms, a rebalance.
		replay(small, 0, 400, 300, 100, 180, 10, 30))
	res.Runs[len(res.Runs)-1].Rebalances = 1
	var b bytes.Buffer
	if err := res.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| 512 MiB | 100 Mbit/s | 200 | 250 (200–300) | 210 (180–230) | 140 (120–210) | 60 (20–70) | 60 (40–90) | 900 | 400 | 20 / 70 (50–200) | 104.0× (90.0×–125.0×) | 3/3 | 0 | 3/3 |",
		"- 512 MiB, 100 Mbit/s, 200/s: gap ≤ max(frozen + 100, 250) ms: met (3/3 runs within",
		"stop-and-copy / replay gap 104.0× (90.0×–125.0×) (goal ≥ 20×: met)",
		"cutover pause longest 90 ms (≤ 150 ms: met)",
		"latency p99 during ≤ 2× steady + cutover: missed (2/3 runs within)",
		"0 lost, 0 duplicated, 0 rebalances, digests equal 3/3, 3/3 runs ok (met).",
		"- 16 MiB, unthrottled, 200/s: gap ≤ max(frozen + 100, 250) ms: missed (0/1 runs within; worst: 400 ms against its bound 250 ms, +150 ms)",
		"stop-and-copy / replay gap 3.8×;",
		"0 lost, 0 duplicated, 1 rebalances, digests equal 1/1, 1/1 runs ok (missed).",
		"- All cells: cutover pause p99 180 ms over 4 runs (nearest rank; the longest), apache broker: missed (30 ms over 150 ms).",
		"| 512 MiB | 100 Mbit/s | 200 | ftwin-migrate-replay | 250 (200–300) |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Index(md, "| ftwin-migrate |") > strings.Index(md, "| ftwin-migrate-replay |") {
		t.Errorf("replay's row is not after ftwin-migrate's:\n%s", md)
	}
	// A digest mismatch is a failed run.
	bad := replay(big, 3, 200, 180, 120, 40, 20, 50)
	bad.DigestEqual = false
	if bad.OK() {
		t.Error("a replay run with different digests is OK")
	}
	// No replay runs: no replay section (an earlier bench.json renders as before).
	res.Runs = slices.DeleteFunc(res.Runs, func(x Run) bool { return x.Method == scenario.MethodReplay })
	b.Reset()
	if err := res.WriteMarkdown(&b); err != nil || strings.Contains(b.String(), "Replay (") {
		t.Errorf("a report without replay runs has a replay section (%v):\n%s", err, b.String())
	}
}

func TestMethodsOrder(t *testing.T) {
	i := slices.Index(Methods, scenario.MethodFtwin)
	if i < 0 || i+1 >= len(Methods) || Methods[i+1] != scenario.MethodReplay {
		t.Fatalf("Methods %v: want %s right after %s", Methods, scenario.MethodReplay, scenario.MethodFtwin)
	}
	if !slices.Contains(AllMethods, scenario.MethodReplay) {
		t.Fatalf("AllMethods %v lacks %s", AllMethods, scenario.MethodReplay)
	}
}

func TestNearestRank(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if got := nearestRank(xs, 0.99); got != 5 {
		t.Errorf("p99 of 5 values: %v, want the largest", got)
	}
	if got := nearestRank(xs, 0.5); got != 3 {
		t.Errorf("p50: %v", got)
	}
}

func TestSkip(t *testing.T) {
	cfg := Config{Skip: []Skip{{Method: scenario.MethodRestart, StateMiB: 16}}}
	if !cfg.skips(Cell{StateMiB: 16, LinkMbit: 100}, scenario.MethodRestart) {
		t.Error("kafka-restart at 16 MiB not skipped")
	}
	if cfg.skips(Cell{StateMiB: 128}, scenario.MethodRestart) || cfg.skips(Cell{StateMiB: 16}, scenario.MethodReplay) {
		t.Error("skipped more than asked")
	}
	res := &Results{Skipped: cfg.Skip, Runs: []Run{{Cell: Cell{StateMiB: 16}, Method: scenario.MethodFtwin, EventsIn: 1, EventsOut: 1}}}
	var b bytes.Buffer
	if err := res.WriteMarkdown(&b); err != nil || !strings.Contains(b.String(), "Not run, to fit the run's time budget (`--skip`): kafka-restart at 16 MiB.") {
		t.Errorf("report of a run with skips (%v):\n%s", err, b.String())
	}
}

// The Kafka Streams twin's report: its state column names the fleet, wire/state is not
// divided by a state size it has not, and the JVM table carries the source JVM, CRIU's part
// for the CRIU methods and the restoration for the Kafka-native ones.
func TestReportStreams(t *testing.T) {
	cell := Cell{Rate: 200}
	res := &Results{Twin: TwinStreams, Devices: 64, Repeats: 2, BandwidthMBps: map[int]float64{0: 100}, Cells: []Cell{cell}}
	jvm := &JVMStats{RSSBytes: 150 << 20, HeapUsedMiB: 40, Threads: 22, ActiveTasks: 3}
	for i := range 2 {
		res.Runs = append(res.Runs,
			Run{Cell: cell, Method: scenario.MethodFtwin, StreamGapMs: 1500, FrozenMs: float64(300 + 100*i), MovedBytes: 130 << 20, WireBytes: 26 << 20, EventsIn: 10, EventsOut: 10, JVM: jvm},
			Run{Cell: cell, Method: scenario.MethodRestart, StreamGapMs: 9000, RestoredRecords: int64(64 + i), RestoreMs: 120, Rebalances: 0, EventsIn: 10, EventsOut: 10, JVM: jvm},
			Run{Cell: cell, Method: scenario.MethodStandby, StreamGapMs: 3000, RestoredRecords: 5, RestoreMs: 10, Rebalances: 2, EventsIn: 10, EventsOut: 10})
	}
	var b bytes.Buffer
	if err := res.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| Streams, 64 devices | unthrottled | 200 | ftwin-migrate |",
		"| unthrottled | ftwin-migrate | 150 | 40 | 22 | 350 (300–400) | 130 | – | – | 0 | 2/2 |",
		"| unthrottled | kafka-restart | 150 | 40 | 22 | – | – | 64 (64–65) | 120 | 0 | 2/2 |",
		"| unthrottled | kafka-standby | – | – | – | – | – | 5 | 10 | 2 | 2/2 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "Inf") || strings.Contains(md, "NaN") {
		t.Errorf("table divides by a state size the Streams twin has not:\n%s", md)
	}
}

// A Streams benchmark refuses what it cannot run honestly, naming what to change.
func TestStreamsConfigRefused(t *testing.T) {
	base := func() Config {
		c := Config{StreamsArchive: "streams.tar", Broker: broker.Apache, Cells: []Cell{{Rate: 200}}}
		c.defaults()
		return c
	}
	if c := base(); c.check() != nil || !slices.Equal(c.Methods, StreamsMethods) {
		t.Fatalf("default Streams config: methods %v, check %v", c.Methods, c.check())
	}
	for name, edit := range map[string]func(*Config){
		"replay":    func(c *Config) { c.Methods = []string{scenario.MethodReplay} },
		"state MiB": func(c *Config) { c.Cells = []Cell{{StateMiB: 16, Rate: 200}} },
		"kfake":     func(c *Config) { c.Broker = broker.Embedded },
	} {
		c := base()
		edit(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
