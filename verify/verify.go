// Package verify checks the output of the twin workload for exactly-once continuity across
// migrations: it reads the output topic with read_committed up to the high watermarks it finds
// when called and reports, per device and in total, the sequence numbers lost (never output),
// duplicated (output more than once) and out of order, and the longest pause of the output
// stream (stream gap, from the processed_ns stamps).
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Event is the value of one output record of the twin.
type Event struct {
	Device         string  `json:"device"`
	Seq            int64   `json:"seq"`
	InputPartition int32   `json:"input_partition"`
	InputOffset    int64   `json:"input_offset"`
	Mean           float64 `json:"mean"`
	Stddev         float64 `json:"stddev"`
	Baseline       float64 `json:"baseline"`
	Anomaly        bool    `json:"anomaly"`
	// SensorNS is the reading's timestamp at the sensor; ProcessedNS when the twin produced
	// the output (inside the transaction that commits it).
	SensorNS    int64  `json:"sensor_ns"`
	ProcessedNS int64  `json:"processed_ns"`
	Instance    string `json:"instance"`
}

// Report is what Output and Analyze find.
type Report struct {
	Topic     string `json:"topic,omitempty"`
	EventsOut int64  `json:"events_out"`
	// Expected is the number of (device, seq) pairs expected: the sum of the per-device
	// maximum sequence numbers.
	Expected   int64 `json:"expected"`
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	OutOfOrder int64 `json:"out_of_order"`
	// Unexpected counts outputs beyond the expected maximum of their device (or of a device
	// not expected at all); never when the expectation is inferred from the output.
	Unexpected int64 `json:"unexpected"`
	// Malformed counts records whose value is not an Event.
	Malformed int64 `json:"malformed"`
	// StreamGap is the longest time between two consecutive outputs (by processed_ns).
	StreamGap time.Duration `json:"stream_gap_ns"`
	// StreamGapAfterNS is the processed_ns of the output before that gap.
	StreamGapAfterNS int64 `json:"stream_gap_after_ns,omitempty"`
	// Instances counts outputs by the instance that processed them.
	Instances map[string]int64         `json:"instances"`
	Devices   map[string]*DeviceReport `json:"devices"`
}

// DeviceReport is the report of one device.
type DeviceReport struct {
	Events     int64 `json:"events"`
	MaxSeq     int64 `json:"max_seq"`
	Expected   int64 `json:"expected"`
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	OutOfOrder int64 `json:"out_of_order"`
	// LostSeqs lists the first lost sequence numbers (at most 20).
	LostSeqs []int64 `json:"lost_seqs,omitempty"`
}

// OK says whether nothing was lost, duplicated, reordered, unexpected or malformed.
func (r *Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.OutOfOrder == 0 && r.Unexpected == 0 && r.Malformed == 0
}

// Option configures Output.
type Option func(*config)

type config struct {
	expected   map[string]int64
	inputTopic string
}

// ExpectMaxSeq sets the expected outputs: for every device, sequence numbers 1 to its maximum
// (sensors.Result.MaxSeq). Without it (or InputTopic) the maximum seen in the output is expected.
func ExpectMaxSeq(maxSeq map[string]int64) Option {
	return func(c *config) { c.expected = maxSeq }
}

// InputTopic infers the expected per-device maximum sequence numbers from the input topic,
// read to its high watermarks at call time. Every input must have been processed by then.
func InputTopic(topic string) Option { return func(c *config) { c.inputTopic = topic } }

// Output reads topic with read_committed from the start to the high watermarks at call time
// and analyses it. An open transaction below those marks makes it wait until the transaction
// ends (or ctx does).
func Output(ctx context.Context, brokers []string, topic string, opts ...Option) (Report, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	cl, err := NewReader(brokers)
	if err != nil {
		return Report{}, fmt.Errorf("verify: create a Kafka client: %w", err)
	}
	defer cl.Close()

	expected := c.expected
	if c.inputTopic != "" {
		expected = map[string]int64{}
		err := ReadTopic(ctx, cl, c.inputTopic, func(r *kgo.Record) {
			var in struct {
				Device string `json:"device"`
				Seq    int64  `json:"seq"`
			}
			if json.Unmarshal(r.Value, &in) == nil && in.Seq > expected[in.Device] {
				expected[in.Device] = in.Seq
			}
		})
		if err != nil {
			return Report{}, fmt.Errorf("verify: read the input: %w", err)
		}
	}

	outs, malformed, err := readEvents(ctx, cl, topic)
	if err != nil {
		return Report{}, fmt.Errorf("verify: read the output: %w", err)
	}
	rep := Analyze(outs, expected)
	rep.Topic, rep.Malformed = topic, malformed
	return rep, nil
}

// Events reads every committed event of an output topic, as ReadTopic does, with a client of
// its own; malformed counts the records that are not events.
func Events(ctx context.Context, brokers []string, topic string) (events []Event, malformed int64, err error) {
	cl, err := NewReader(brokers)
	if err != nil {
		return nil, 0, fmt.Errorf("verify: create a Kafka client: %w", err)
	}
	defer cl.Close()
	return readEvents(ctx, cl, topic)
}

func readEvents(ctx context.Context, cl *kgo.Client, topic string) (events []Event, malformed int64, err error) {
	err = ReadTopic(ctx, cl, topic, func(r *kgo.Record) {
		var e Event
		if err := json.Unmarshal(r.Value, &e); err != nil || e.Device == "" {
			malformed++
			return
		}
		events = append(events, e)
	})
	return events, malformed, err
}

// ReadTopic calls fn for every committed data record of topic, partition by partition in
// offset order, from the start to the high watermarks at call time. The client must come from
// NewReader (read_committed, keeping transaction markers) and consume nothing else.
func ReadTopic(ctx context.Context, cl *kgo.Client, topic string, fn func(*kgo.Record)) error {
	if keep, _ := cl.OptValue(kgo.KeepControlRecords).(bool); !keep {
		return errors.New("verify: ReadTopic needs a client from NewReader (one that keeps control records)")
	}
	adm := kadm.NewClient(cl)
	ends, err := listOffsets(ctx, adm.ListEndOffsets, topic)
	if err != nil {
		return fmt.Errorf("high watermarks of %s: %w", topic, err)
	}
	starts, err := listOffsets(ctx, adm.ListStartOffsets, topic)
	if err != nil {
		return fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	want := map[int32]int64{} // partition -> last offset to reach
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, o.Partition); ok && o.Offset > s.Offset {
			want[o.Partition] = o.Offset - 1
			parts[o.Partition] = kgo.NewOffset().At(s.Offset)
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})
	defer cl.PurgeTopicsFromConsuming(topic)
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %d partitions not read to their end %v: %w", topic, len(want), want, ctx.Err())
		}
		for _, fe := range fs.Errors() {
			if !errors.Is(fe.Err, context.Canceled) {
				return fmt.Errorf("fetch %s[%d]: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) {
			last, ok := want[r.Partition]
			if !ok || r.Offset > last {
				return
			}
			if !r.Attrs.IsControl() {
				fn(r)
			}
			if r.Offset == last {
				delete(want, r.Partition)
			}
		})
	}
	return nil
}

// listOffsets retries list while the answer has retryable errors (a topic just created is
// not known to every part of the broker at once), for up to 30 seconds.
func listOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topic string) (kadm.ListedOffsets, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		offs, err := list(ctx, topic)
		if err == nil {
			err = offs.Error()
		}
		if err == nil || !kerr.IsRetriable(err) || time.Now().After(deadline) {
			return offs, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readClientOpts are what ReadTopic needs of its client: committed data only, and the
// transaction markers, whose offsets are the last ones of a partition as often as not.
func readClientOpts() []kgo.Opt {
	return []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()}
}

// NewReader is a client for ReadTopic.
func NewReader(brokers []string, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, readClientOpts()...), opts...)...)
}

// Analyze reports on outputs in the order they were read (per device, that is the order of
// one partition). expected maps devices to their maximum sequence number; nil infers it from
// the outputs.
func Analyze(outs []Event, expected map[string]int64) Report {
	rep := Report{Instances: map[string]int64{}, Devices: map[string]*DeviceReport{}}
	seen := map[string]*bitset{}
	for _, o := range outs {
		rep.EventsOut++
		rep.Instances[o.Instance]++
		d := rep.Devices[o.Device]
		if d == nil {
			d = &DeviceReport{}
			rep.Devices[o.Device] = d
			seen[o.Device] = &bitset{}
		}
		d.Events++
		s := seen[o.Device]
		switch {
		case o.Seq < 1 || s.has(o.Seq):
			d.Duplicated++
		case o.Seq < d.MaxSeq:
			d.OutOfOrder++
		}
		if o.Seq >= 1 {
			s.set(o.Seq)
		}
		d.MaxSeq = max(d.MaxSeq, o.Seq)
	}
	if expected == nil {
		expected = map[string]int64{}
		for dev, d := range rep.Devices {
			expected[dev] = d.MaxSeq
		}
	}
	for dev, max := range expected {
		d := rep.Devices[dev]
		if d == nil {
			d = &DeviceReport{}
			rep.Devices[dev] = d
			seen[dev] = &bitset{}
		}
		d.Expected = max
		s := seen[dev]
		for q := int64(1); q <= max; q++ {
			if !s.has(q) {
				d.Lost++
				if len(d.LostSeqs) < 20 {
					d.LostSeqs = append(d.LostSeqs, q)
				}
			}
		}
	}
	for dev, d := range rep.Devices {
		rep.Expected += d.Expected
		rep.Lost += d.Lost
		rep.Duplicated += d.Duplicated
		rep.OutOfOrder += d.OutOfOrder
		if _, ok := expected[dev]; !ok {
			rep.Unexpected += d.Events
		} else if d.MaxSeq > d.Expected {
			rep.Unexpected += seen[dev].countAbove(d.Expected)
		}
	}

	ts := make([]int64, 0, len(outs))
	for _, o := range outs {
		ts = append(ts, o.ProcessedNS)
	}
	slices.Sort(ts)
	for i := 1; i < len(ts); i++ {
		if g := time.Duration(ts[i] - ts[i-1]); g > rep.StreamGap {
			rep.StreamGap, rep.StreamGapAfterNS = g, ts[i-1]
		}
	}
	return rep
}

// Worst lists the devices with problems, worst first, for messages.
func (r *Report) Worst(n int) []string {
	var devs []string
	for dev, d := range r.Devices {
		if d.Lost+d.Duplicated+d.OutOfOrder > 0 {
			devs = append(devs, dev)
		}
	}
	sort.Slice(devs, func(i, j int) bool {
		a, b := r.Devices[devs[i]], r.Devices[devs[j]]
		return a.Lost+a.Duplicated+a.OutOfOrder > b.Lost+b.Duplicated+b.OutOfOrder
	})
	out := []string{}
	for _, dev := range devs[:min(n, len(devs))] {
		d := r.Devices[dev]
		out = append(out, fmt.Sprintf("%s: lost %d %v, duplicated %d, out of order %d", dev, d.Lost, d.LostSeqs, d.Duplicated, d.OutOfOrder))
	}
	return out
}

// bitset is a growable set of positive sequence numbers.
type bitset struct{ w []uint64 }

func (b *bitset) set(i int64) {
	for int(i/64) >= len(b.w) {
		b.w = append(b.w, 0)
	}
	b.w[i/64] |= 1 << (i % 64)
}

func (b *bitset) has(i int64) bool {
	return int(i/64) < len(b.w) && b.w[i/64]&(1<<(i%64)) != 0
}

func (b *bitset) countAbove(n int64) int64 {
	var c int64
	for i := n + 1; i < int64(len(b.w))*64; i++ {
		if b.has(i) {
			c++
		}
	}
	return c
}
