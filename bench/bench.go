// Package bench measures migration downtime of the digital twin, side by side, in one run:
// ftwin-migrate, the plain containerd path, the Kafka-native restart from a changelog, and the
// CRIU floor, for several state sizes over an unthrottled and a throttled (fog uplink) link.
// Machines are noisy: compare the ratios measured together, not numbers across runs.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

// Methods, in the order each configuration runs them.
var Methods = []string{scenario.MethodFloor, scenario.MethodFtwin, scenario.MethodNaive, scenario.MethodRestart}

// Config describes a benchmark run.
type Config struct {
	// StateMiB are the twin state sizes. Default 16, 128, 512.
	StateMiB []int
	// LinksMbit are the host link rates; 0 is unthrottled. Default 0 and 100.
	LinksMbit []int
	// Methods to run. Default: all (see Methods).
	Methods []string
	// Rate is sensor events per second. Default 200.
	Rate float64
	// Dwell is how long the twin runs before and after the move. Default 2s.
	Dwell time.Duration
	// TwinBinary is the static twin executable.
	TwinBinary string
	// Broker is the Kafka the labs run. Default kfake.
	Broker broker.Kind
	// BaseDir holds the labs. Default lab.DefaultBaseDir.
	BaseDir string
	// Log receives progress lines (optional).
	Log io.Writer
}

// Run is one measured move.
type Run struct {
	Method   string `json:"method"`
	StateMiB int    `json:"state_mib"`
	LinkMbit int    `json:"link_mbit"` // 0: unthrottled
	// StreamGapMs is the longest pause in the twin's committed output around the move;
	// ExtraGapMs is that minus the normal interval between output batches.
	StreamGapMs float64 `json:"stream_gap_ms"`
	ExtraGapMs  float64 `json:"extra_gap_ms"`
	// FloorRatio is StreamGapMs over the floor's estimate for the same state and link (the CRIU
	// dump+restore on one host plus the CRIU image's size at the link's measured bandwidth).
	FloorRatio float64 `json:"ratio_to_floor"`
	DowntimeMs float64 `json:"downtime_ms"`
	FrozenMs   float64 `json:"criu_frozen_ms"`
	TotalMs    float64 `json:"total_ms"`
	Bytes      int64   `json:"bytes"`
	WireBytes  int64   `json:"wire_bytes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	EventsIn   int64   `json:"events_in"`
	EventsOut  int64   `json:"events_out"`
	Lost       int64   `json:"lost"`
	Duplicated int64   `json:"duplicated"`
	Rebalances int     `json:"rebalances"`
	Error      string  `json:"error,omitempty"`
	// FloorEstimateMs is set on floor runs: dump+restore plus Bytes at the link's bandwidth.
	FloorEstimateMs float64 `json:"floor_estimate_ms,omitempty"`
}

// Results is a benchmark run.
type Results struct {
	Started time.Time `json:"started"`
	Host    string    `json:"host"`
	// BandwidthMBps is the measured TCP bandwidth between two lab hosts, per link rate.
	BandwidthMBps map[int]float64 `json:"bandwidth_mbps"`
	Runs          []Run           `json:"runs"`
}

// OK reports whether every run completed with nothing lost or duplicated.
func (r *Results) OK() bool {
	for _, x := range r.Runs {
		if x.Error != "" || x.Lost != 0 || x.Duplicated != 0 || x.EventsOut != x.EventsIn {
			return false
		}
	}
	return len(r.Runs) > 0
}

func (c *Config) defaults() {
	if len(c.StateMiB) == 0 {
		c.StateMiB = []int{16, 128, 512}
	}
	if len(c.LinksMbit) == 0 {
		c.LinksMbit = []int{0, 100}
	}
	if len(c.Methods) == 0 {
		c.Methods = Methods
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if c.Dwell == 0 {
		c.Dwell = 2 * time.Second
	}
	if c.Broker == "" {
		c.Broker = broker.Embedded
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Measure runs the benchmark: for each state size and link, each method in its own lab, one
// after the other.
func Measure(ctx context.Context, cfg Config) (*Results, error) {
	cfg.defaults()
	host, _ := os.Hostname()
	res := &Results{Started: time.Now(), Host: host, BandwidthMBps: map[int]float64{}}
	n := 0
	for _, link := range cfg.LinksMbit {
		for _, size := range cfg.StateMiB {
			for _, method := range cfg.Methods {
				n++
				fmt.Fprintf(cfg.Log, "bench: %s, state %d MiB, link %s ...\n", method, size, linkName(link))
				run := measureOne(ctx, cfg, res, method, size, link, n)
				fmt.Fprintf(cfg.Log, "bench:   stream gap %.0f ms, downtime %.0f ms, lost %d, duplicated %d %s\n",
					run.StreamGapMs, run.DowntimeMs, run.Lost, run.Duplicated, run.Error)
				res.Runs = append(res.Runs, run)
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
			}
		}
	}
	res.computeRatios()
	return res, nil
}

func linkName(mbit int) string {
	if mbit == 0 {
		return "unthrottled"
	}
	return fmt.Sprintf("%d Mbit/s", mbit)
}

func measureOne(ctx context.Context, cfg Config, res *Results, method string, size, link, n int) Run {
	run := Run{Method: method, StateMiB: size, LinkMbit: link}
	s, err := scenario.Start(ctx, scenario.Config{
		Lab: lab.Config{Name: fmt.Sprintf("bench%d", n%100), BaseDir: cfg.BaseDir, Hosts: []string{"cloud", "fog"},
			Subnet: fmt.Sprintf("10.231.%d.0/24", 100+n%100), Broker: cfg.Broker, UplinkMbit: link},
		TwinBinary: cfg.TwinBinary, StateMiB: size, Rate: cfg.Rate,
		TwinArgs: []string{"-rebuild-from-changelog"},
	})
	if err != nil {
		run.Error = err.Error()
		return run
	}
	defer s.Close()
	if _, ok := res.BandwidthMBps[link]; !ok {
		if bw, err := lab.MeasureBandwidth(ctx, s.Lab.Hosts[0], s.Lab.Hosts[1], bandwidthProbeBytes(link)); err == nil {
			res.BandwidthMBps[link] = bw / 1e6
		}
	}
	time.Sleep(cfg.Dwell)
	var m scenario.Migration
	switch method {
	case scenario.MethodFtwin:
		m = s.Migrate(ctx, "fog")
	case scenario.MethodNaive:
		m = s.MoveNaive(ctx, "fog")
	case scenario.MethodRestart:
		m = s.Restart(ctx, "fog")
	case scenario.MethodFloor:
		m = s.Floor(ctx)
	default:
		run.Error = fmt.Sprintf("unknown method %q", method)
		return run
	}
	if m.Err != nil {
		run.Error = m.Err.Error()
	}
	time.Sleep(cfg.Dwell)
	out, err := s.Finish(ctx)
	if err != nil && run.Error == "" {
		run.Error = err.Error()
	}
	if len(out.Migrations) == 1 {
		mr := out.Migrations[0]
		run.StreamGapMs, run.DowntimeMs, run.FrozenMs, run.TotalMs = mr.StreamGapMs, mr.DowntimeMs, mr.FrozenMs, mr.TotalMs
		run.Bytes, run.WireBytes, run.CPUSeconds = mr.BytesSent, mr.WireBytes, mr.CPUSeconds
		run.ExtraGapMs = max(0, mr.StreamGapMs-out.IntervalMs)
	}
	run.EventsIn, run.EventsOut, run.Lost, run.Duplicated, run.Rebalances = out.EventsIn, out.EventsOut, out.Lost, out.Duplicated, out.Rebalances
	if method == scenario.MethodFloor {
		if bw := res.BandwidthMBps[link]; bw > 0 {
			run.FloorEstimateMs = run.DowntimeMs + float64(run.Bytes)/(bw*1e6)*1000
		}
	}
	return run
}

// bandwidthProbeBytes sends about a second's worth at the link's rate (64 MiB unthrottled).
func bandwidthProbeBytes(mbit int) int64 {
	if mbit == 0 {
		return 64 << 20
	}
	return int64(mbit) * 1e6 / 8
}

func (r *Results) computeRatios() {
	floor := map[[2]int]float64{}
	for _, x := range r.Runs {
		if x.Method == scenario.MethodFloor && x.FloorEstimateMs > 0 {
			floor[[2]int{x.StateMiB, x.LinkMbit}] = x.FloorEstimateMs
		}
	}
	for i, x := range r.Runs {
		if f := floor[[2]int{x.StateMiB, x.LinkMbit}]; f > 0 && x.StreamGapMs > 0 {
			r.Runs[i].FloorRatio = x.StreamGapMs / f
		}
	}
}

// Write puts bench.json, bench.md and bench.svg in dir.
func (r *Results) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.json"), b, 0o644); err != nil {
		return err
	}
	for name, write := range map[string]func(io.Writer) error{"bench.md": r.WriteMarkdown, "bench.svg": r.WriteSVG} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("bench: write %s: %w", name, err)
		}
	}
	return nil
}
