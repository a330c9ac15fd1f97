package verify

import (
	"testing"
	"time"
)

// timedStream makes outputs every 100 ms from t=0 to t=10 s (one per batch), with pauses: the
// outputs strictly inside each [from, to] are left out.
func timedStream(pauses ...[2]int64) []Event {
	var ev []Event
	ms := int64(time.Millisecond)
next:
	for t := int64(0); t <= 10000; t += 100 {
		for _, p := range pauses {
			if t > p[0] && t < p[1] {
				continue next
			}
		}
		ev = append(ev, Event{Device: "d", Seq: t/100 + 1, ProcessedNS: t * ms, SensorNS: t*ms - 20*ms})
	}
	return ev
}

func at(ms int64) time.Time { return time.Unix(0, ms*int64(time.Millisecond)) }

func TestMoveStats(t *testing.T) {
	// One long pause 3000..4500 ms in the window [2900, 4000].
	ev := timedStream([2]int64{3000, 4500})
	stamps := Stamps(ev)
	normal := NormalInterval(stamps)
	if normal != 100*time.Millisecond {
		t.Fatalf("normal interval %v, want 100ms", normal)
	}
	m := MoveStats(ev, at(2900), at(4000), normal)
	if m.StreamGap != 1500*time.Millisecond || m.Downtime != 1400*time.Millisecond || m.Pauses != 1 || !m.Resumed.Equal(at(4500)) {
		t.Fatalf("one pause: %+v, want gap 1.5s, downtime 1.4s, resumed at 4.5s", m)
	}
	// Outputs at 2900 and 3000 (before the pause) and 4500 (after it) in [2900, 4500]: 3 in 1.6 s.
	if want := 3 / 1.6; m.Throughput < want-1e-9 || m.Throughput > want+1e-9 {
		t.Fatalf("throughput %v, want %v", m.Throughput, want)
	}
	if p := LongestPause(stamps); p.Len() != 1500*time.Millisecond {
		t.Fatalf("whole-run gap %v", p.Len())
	}
}

func TestMoveStatsTwoPauses(t *testing.T) {
	// Two pauses of 600 ms in the window: downtime counts each beyond the interval (2×500),
	// the gap is the longer one.
	ev := timedStream([2]int64{2000, 2600}, [2]int64{3000, 3600})
	m := MoveStats(ev, at(1900), at(3700), 100*time.Millisecond)
	if m.StreamGap != 600*time.Millisecond || m.Downtime != 1000*time.Millisecond || m.Pauses != 2 {
		t.Fatalf("two pauses: %+v, want gap 600ms, downtime 1s over 2 pauses", m)
	}
}

func TestMoveStatsStallAfterWindow(t *testing.T) {
	// The move [2000, 3000] passes without a pause; a stall 5000..8000 starts after it: not the
	// move's, but the run's stream gap.
	ev := timedStream([2]int64{5000, 8000})
	m := MoveStats(ev, at(2000), at(3000), 100*time.Millisecond)
	if m.StreamGap != 100*time.Millisecond || m.Downtime != 0 || m.Pauses != 0 || !m.Resumed.Equal(at(3100)) {
		t.Fatalf("stall after the window counted in the move: %+v", m)
	}
	if p := LongestPause(Stamps(ev)); p.Len() != 3*time.Second || p.From != at(5000).UnixNano() {
		t.Fatalf("whole-run gap %+v, want the 3 s stall from 5 s", p)
	}
	// A pause that starts inside the window and ends after it is the move's, whole.
	m = MoveStats(timedStream([2]int64{2900, 6000}), at(2000), at(3000), 100*time.Millisecond)
	if m.StreamGap != 3100*time.Millisecond || !m.Resumed.Equal(at(6000)) {
		t.Fatalf("pause overlapping the window's end: %+v", m)
	}
}

func TestLatencies(t *testing.T) {
	// 1000 events with latencies 1..1000 ms, shuffled.
	var ev []Event
	for i := int64(1); i <= 1000; i++ {
		l := (i*337)%1000 + 1
		ev = append(ev, Event{ProcessedNS: 1e12 + i, SensorNS: 1e12 + i - l*int64(time.Millisecond)})
	}
	ev = append(ev, Event{ProcessedNS: 5}) // no sensor timestamp: not counted
	l := Latencies(ev)
	ms := time.Millisecond
	if l.N != 1000 || l.P50 != 500*ms || l.P99 != 990*ms || l.P999 != 999*ms || l.Max != 1000*ms {
		t.Fatalf("latencies %+v, want n 1000, p50 500ms, p99 990ms, p99.9 999ms, max 1s", l)
	}
	if (Latencies(nil) != Latency{}) {
		t.Fatal("latencies of nothing")
	}
}
