package verify

import (
	"math"
	"slices"
	"time"
)

// The timing metrics of the benchmark, one definition each for every way of moving the twin,
// computed from the committed outputs alone.
//
// A pause is the time between two consecutive output batches (distinct processed_ns stamps, in
// order). The normal interval is the median pause over the run. Around a move, whose window
// is [start, end] as the mover saw it:
//   - the stream gap is the longest pause that overlaps the window;
//   - the downtime is the sum, over the pauses that overlap the window, of what each lasts
//     beyond the normal interval (so two short pauses and one long one compare fairly);
//   - the move is over when output resumes: at the first output after end, or after the last
//     pause overlapping the window, whichever is later (Resumed);
//   - the throughput during the move is the outputs processed in [start, Resumed] over that time.
//
// A stall that starts after end (a pause whose first output is after end) is not the move's;
// it shows in the whole run's stream gap.

// Pause is the time between two consecutive output batches.
type Pause struct {
	From, To int64 // processed_ns of the outputs on either side
}

// Len is the pause's length.
func (p Pause) Len() time.Duration { return time.Duration(p.To - p.From) }

// Stamps returns the distinct processed_ns stamps of events, in order.
func Stamps(events []Event) []int64 {
	ts := make([]int64, 0, len(events))
	for _, e := range events {
		ts = append(ts, e.ProcessedNS)
	}
	slices.Sort(ts)
	return slices.Compact(ts)
}

// NormalInterval is the median pause between consecutive stamps.
func NormalInterval(stamps []int64) time.Duration {
	if len(stamps) < 2 {
		return 0
	}
	d := make([]int64, 0, len(stamps)-1)
	for i := 1; i < len(stamps); i++ {
		d = append(d, stamps[i]-stamps[i-1])
	}
	slices.Sort(d)
	return time.Duration(d[len(d)/2])
}

// LongestPause is the longest pause over the stamps (the whole run's stream gap).
func LongestPause(stamps []int64) Pause {
	var p Pause
	for i := 1; i < len(stamps); i++ {
		if stamps[i]-stamps[i-1] > p.To-p.From {
			p = Pause{stamps[i-1], stamps[i]}
		}
	}
	return p
}

// Move is what the outputs say about one move.
type Move struct {
	StreamGap time.Duration `json:"stream_gap_ns"`
	Downtime  time.Duration `json:"downtime_ns"`
	Pauses    int           `json:"pauses"` // pauses beyond the normal interval in the window
	Resumed   time.Time     `json:"resumed"`
	// Throughput is outputs per second over [start, Resumed].
	Throughput float64 `json:"throughput"`
}

// MoveStats measures the move in [start, end] against the normal interval.
func MoveStats(events []Event, start, end time.Time, normal time.Duration) Move {
	stamps := Stamps(events)
	s, e := start.UnixNano(), end.UnixNano()
	m := Move{Resumed: end}
	resumed := e
	for i := 1; i < len(stamps); i++ {
		p := Pause{stamps[i-1], stamps[i]}
		if p.To < s || p.From > e {
			continue // before the window, or a stall that starts after it
		}
		m.StreamGap = max(m.StreamGap, p.Len())
		if extra := p.Len() - normal; extra > 0 {
			m.Downtime += extra
			m.Pauses++
		}
		resumed = max(resumed, p.To)
	}
	m.Resumed = time.Unix(0, resumed)
	var n int
	for _, ev := range events {
		if ev.ProcessedNS >= s && ev.ProcessedNS <= resumed {
			n++
		}
	}
	if d := time.Duration(resumed - s); d > 0 {
		m.Throughput = float64(n) / d.Seconds()
	}
	return m
}

// Latency is the distribution of event latency: from the sensor's timestamp to the output's
// processing (within the transaction that commits it), nearest-rank percentiles.
type Latency struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

// Latencies computes Latency over the events that carry a sensor timestamp.
func Latencies(events []Event) Latency {
	var d []int64
	for _, e := range events {
		if e.SensorNS > 0 {
			d = append(d, e.ProcessedNS-e.SensorNS)
		}
	}
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	return Latency{N: len(d), P50: rank(d, 0.50), P99: rank(d, 0.99), P999: rank(d, 0.999), Max: time.Duration(d[len(d)-1])}
}

// rank is the nearest-rank percentile q of sorted d: the smallest value with at least q of the
// values at or below it.
func rank(d []int64, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return time.Duration(d[min(max(i, 0), len(d)-1)])
}
