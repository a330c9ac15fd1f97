// Package bench moves the digital twin with every method side by side, in one run, repeated:
// ftwin-migrate (stop-and-copy, and by replay: a snapshot of the running twin caught up from
// the Kafka log, then a short cutover), containerd's checkpoint/restore done carefully (and,
// if asked, plainly), a Kafka-native restart that rebuilds the whole state from its changelog,
// a warm standby that takes over, and the CRIU floor, over a grid of state sizes, links and
// event rates. Every
// metric has one definition for every method (package verify's timeline, cgroup CPU
// accounting, link counters); see README's Benchmark section. Machines are noisy: compare the
// medians measured together, with their ranges, not numbers across runs.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// Methods run by default, in the order each cell runs them.
var Methods = []string{scenario.MethodFloor, scenario.MethodFtwin, scenario.MethodReplay, scenario.MethodContainerd, scenario.MethodRestart, scenario.MethodStandby}

// AllMethods adds the plain containerd path (uncompressed, everything resent).
var AllMethods = append(slices.Clone(Methods), scenario.MethodNaive)

// StreamsMethods are the methods for the Kafka Streams twin (Config.StreamsArchive), in order:
// the CRIU floor, ftwin-migrate's stop-and-copy, and the two Kafka-native ways a Streams user
// has — a new instance on the target restoring its store from the changelog, and a standby
// replica (num.standby.replicas=1, kept warm on the target) taking over. Replay is not offered
// for Streams (see README), and the containerd path has no hooks: a frozen Streams
// transaction is aborted and the copy fenced.
var StreamsMethods = []string{scenario.MethodFloor, scenario.MethodFtwin, scenario.MethodRestart, scenario.MethodStandby}

// Cell is one configuration of the grid.
type Cell struct {
	StateMiB int `json:"state_mib"`
	LinkMbit int `json:"link_mbit"` // 0: unthrottled
	// Rate is sensor events per second; HighRate marks a rate set to CapacityShare of the
	// twin's measured capacity (Rate is filled in then).
	Rate     float64 `json:"rate"`
	HighRate bool    `json:"high_rate,omitempty"`
	// Repeats overrides Config.Repeats for this cell (0: Config.Repeats).
	Repeats int `json:"repeats,omitempty"`
}

// Skip is a method left out at a state size.
type Skip struct {
	Method   string `json:"method"`
	StateMiB int    `json:"state_mib"`
}

// skips reports whether cfg leaves method out in cell c.
func (c *Config) skips(cell Cell, method string) bool {
	return slices.Contains(c.Skip, Skip{Method: method, StateMiB: cell.StateMiB})
}

// CapacityShare is the high rate's share of the measured capacity.
const CapacityShare = 0.8

// Config describes a benchmark run.
type Config struct {
	// Cells is the grid. Required.
	Cells []Cell
	// Methods to run. Default: Methods.
	Methods []string
	// Repeats is how many times each cell runs every method. Default 5.
	Repeats int
	// Skip leaves a method out at a state size (at every link and rate), to fit a run into a
	// budget; the report says what was left out.
	Skip []Skip
	// DigestRepeats is how many of the first repeats run the twins with -digest, proving the
	// rebuilt or taken-over state equal to the source's (it costs a pass over the state on
	// both sides, in the measured time). Default 1.
	DigestRepeats int
	// Devices is the fleet's size. Default 256.
	Devices int
	// Dwell is how long the twin runs before the move (the baseline; a standby's idle cost)
	// and after output resumed. Default 2s.
	Dwell time.Duration
	// CapacityStateMiB is the state size the capacity is measured at (for HighRate cells).
	// Default: the first HighRate cell's.
	CapacityStateMiB int
	// Name and Subnet are the lab's (every run brings up its own lab under that name, one after
	// the other). Two benchmarks side by side need different ones. Default "bench",
	// "10.231.100.0/24".
	Name, Subnet string
	// TwinBinary is the static twin executable.
	TwinBinary string
	// StreamsArchive, in place of TwinBinary, is the image archive of the Kafka Streams twin
	// (scenario.BuildStreamsTwin): every run moves it instead, with StreamsMethods only. Its
	// state is what its store holds for Devices devices (a Cell's StateMiB must be 0), and it
	// needs Apache Kafka (Broker) for its changelog's compaction. Its changelog is configured
	// as a careful Streams user would for fast restores (StreamsTwinArgs).
	StreamsArchive string
	// Broker is the Kafka the labs run. Default kfake.
	Broker broker.Kind
	// BaseDir holds the labs. Default lab.DefaultBaseDir.
	BaseDir string
	// Log receives progress lines (optional).
	Log io.Writer
	// OnRun is called after every run with the results so far (to write them as they come).
	OnRun func(*Results)
}

// Run is one measured move. Times in ms; see README for the definitions.
type Run struct {
	Cell
	Method string `json:"method"`
	Repeat int    `json:"repeat"`
	// From the committed output (verify.MoveStats): the move's longest pause, the sum of its
	// pauses beyond the normal interval, how many, when output resumed (from the move's
	// start) and the outputs per second until then.
	StreamGapMs   float64 `json:"stream_gap_ms"`
	DowntimeMs    float64 `json:"downtime_ms"`
	Pauses        int     `json:"pauses"`
	ResumedMs     float64 `json:"resumed_ms"`
	ThroughputEPS float64 `json:"throughput_eps"`
	// RunGapMs is the longest pause over the whole run; IntervalMs the normal interval.
	RunGapMs   float64 `json:"run_gap_ms"`
	IntervalMs float64 `json:"interval_ms"`
	// Latency of the readings taken from the dwell before the move on: sensor timestamp to
	// output.
	Latency scenario.LatencyMs `json:"latency_ms"`
	// SteadyP99Ms is the p99 latency of the readings taken in the dwell before the move (from
	// t0 to the move's start), MoveP99Ms of those taken during the move (its start to its
	// return).
	SteadyP99Ms float64 `json:"latency_steady_p99_ms"`
	MoveP99Ms   float64 `json:"latency_move_p99_ms"`
	// CPUSeconds is the CPU time of every process involved from the move's start to output
	// resuming, beyond what the same processes used at the baseline rate before the move.
	CPUSeconds float64 `json:"cpu_seconds"`
	// MovedBytes is the state as the method carried it (CRIU image, checkpoint export, or
	// changelog bytes read); WireBytes what of it crossed the link (compressed; for the floor,
	// the zstd size a transfer would send); Compression their ratio. LinkBytes is everything
	// that crossed the target host's link in the move's window (counters). SkippedBytes were
	// not sent because the target held them.
	MovedBytes   int64   `json:"moved_bytes"`
	WireBytes    int64   `json:"wire_bytes"`
	LinkBytes    int64   `json:"link_bytes"`
	SkippedBytes int64   `json:"skipped_bytes,omitempty"`
	Compression  float64 `json:"compression"`
	// The mover's own view and CRIU's.
	MoverDowntimeMs float64 `json:"mover_downtime_ms"`
	FrozenMs        float64 `json:"criu_frozen_ms"`
	// The replay method's (ftwin-migrate-replay) view, from its report: the source's pause
	// for its snapshot (prepare, CRIU's dump leaving it running, release; FrozenMs is CRIU's
	// part of it), how long the shadow took to catch up and how many records it replayed, and
	// the source's pause at the cutover (prepare at the boundary to the shadow's takeover).
	SnapshotPauseMs float64 `json:"snapshot_pause_ms,omitempty"`
	CatchUpMs       float64 `json:"catch_up_ms,omitempty"`
	Replayed        int64   `json:"replayed,omitempty"`
	CutoverPauseMs  float64 `json:"cutover_pause_ms,omitempty"`
	TotalMs         float64 `json:"total_ms"`
	EventsIn        int64   `json:"events_in"`
	EventsOut       int64   `json:"events_out"`
	Lost            int64   `json:"lost"`
	Duplicated      int64   `json:"duplicated"`
	Rebalances      int     `json:"rebalances"`
	// Digest: the run compared the target's state digest with the source's; DigestEqual is
	// the outcome. SourceDigest and TargetDigest are the two (for a replay, the source's and
	// the copy's at the cutover boundary: every replay run compares them).
	DigestChecked bool   `json:"digest_checked,omitempty"`
	DigestEqual   bool   `json:"digest_equal,omitempty"`
	SourceDigest  string `json:"source_digest,omitempty"`
	TargetDigest  string `json:"target_digest,omitempty"`
	// Standby is the standby's cost while nothing moves (kafka-standby runs).
	Standby *StandbyCost `json:"standby,omitempty"`
	// The Kafka Streams twin's (Config.StreamsArchive): RestoredRecords and RestoreMs are what
	// the target's store restored from the changelog before processing, as Streams' restore
	// listener counted it (kafka methods: the whole store for a restart, the tail for a
	// standby); JVM is the source twin's just before the move.
	RestoredRecords int64     `json:"restored_records,omitempty"`
	RestoreMs       float64   `json:"restore_ms,omitempty"`
	JVM             *JVMStats `json:"jvm,omitempty"`
	Error           string    `json:"error,omitempty"`
}

// StandbyCost is what a warm standby costs while nothing moves, over the pre-move dwell.
type StandbyCost struct {
	// LinkBytesPerSec crossed the standby host's link (replication; nothing else runs there).
	LinkBytesPerSec float64 `json:"link_bytes_per_sec"`
	// CPUPerSec is the standby container's CPU seconds per second.
	CPUPerSec float64 `json:"cpu_per_sec"`
	// RSSBytes is the standby container's resident memory; ActiveRSSBytes the active twin's.
	RSSBytes       int64 `json:"rss_bytes"`
	ActiveRSSBytes int64 `json:"active_rss_bytes"`
}

// JVMStats is the Kafka Streams twin's JVM, from its status line: resident set, live heap and
// threads.
type JVMStats struct {
	RSSBytes     int64 `json:"rss_bytes"`
	HeapUsedMiB  int64 `json:"heap_used_mib"`
	Threads      int   `json:"threads"`
	ActiveTasks  int   `json:"active_tasks"`
	StandbyTasks int   `json:"standby_tasks"`
}

// OK reports whether the run completed with nothing lost or duplicated and, if checked, equal
// digests.
func (r Run) OK() bool {
	return r.Error == "" && r.Lost == 0 && r.Duplicated == 0 && r.EventsOut == r.EventsIn && r.EventsIn > 0 &&
		(!r.DigestChecked || r.DigestEqual)
}

// Results is a benchmark run.
type Results struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Host     string    `json:"host"`
	CPUs     int       `json:"cpus"`
	Repeats  int       `json:"repeats"`
	Devices  int       `json:"devices"`
	DwellS   float64   `json:"dwell_s"`
	Broker   string    `json:"broker"`
	// BandwidthMBps is the measured TCP bandwidth between two lab hosts, per link rate.
	BandwidthMBps map[int]float64 `json:"bandwidth_mbps"`
	// CapacityEPS is the twin's measured capacity (events/s) at CapacityStateMiB.
	CapacityEPS      float64 `json:"capacity_eps,omitempty"`
	CapacityStateMiB int     `json:"capacity_state_mib,omitempty"`
	CapacityError    string  `json:"capacity_error,omitempty"`
	// Twin is the twin moved: "" for the Go twin, "streams" for the Kafka Streams twin.
	Twin string `json:"twin,omitempty"`
	// CPUAccounting says whether cgroup CPU accounting worked (else CPU columns are 0).
	CPUAccounting bool   `json:"cpu_accounting"`
	Cells         []Cell `json:"cells"`
	// Skipped are the methods left out at a state size (Config.Skip).
	Skipped []Skip `json:"skipped,omitempty"`
	Runs    []Run  `json:"runs"`
	// Replaced are failed runs that Retry measured again (in Runs now), kept with their errors.
	Replaced []Run `json:"replaced,omitempty"`
}

// OK reports whether every run is OK.
func (r *Results) OK() bool {
	for _, x := range r.Runs {
		if !x.OK() {
			return false
		}
	}
	return len(r.Runs) > 0
}

func (c *Config) defaults() {
	if len(c.Methods) == 0 {
		c.Methods = Methods
		if c.StreamsArchive != "" {
			c.Methods = StreamsMethods
		}
	}
	if c.Repeats == 0 {
		c.Repeats = 5
	}
	if c.DigestRepeats == 0 {
		c.DigestRepeats = 1
	}
	if c.Devices == 0 {
		c.Devices = 256
	}
	if c.Dwell == 0 {
		c.Dwell = 2 * time.Second
	}
	if c.Name == "" {
		c.Name = "bench"
	}
	if c.Subnet == "" {
		c.Subnet = "10.231.100.0/24"
	}
	if c.Broker == "" {
		c.Broker = broker.Embedded
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.CapacityStateMiB == 0 {
		for _, x := range c.Cells {
			if x.HighRate {
				c.CapacityStateMiB = x.StateMiB
				break
			}
		}
	}
}

// Measure runs the benchmark: the capacity first if a cell needs it, then for each cell each
// repeat of every method, each in a lab of its own, one after the other. It writes nothing;
// see Results.Write.
func Measure(ctx context.Context, cfg Config) (*Results, error) {
	cfg.defaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	res := &Results{Started: time.Now(), Host: host, CPUs: runtime.NumCPU(), Repeats: cfg.Repeats, Devices: cfg.Devices,
		DwellS: cfg.Dwell.Seconds(), Broker: string(cfg.Broker), BandwidthMBps: map[int]float64{}, Skipped: cfg.Skip}
	if cfg.StreamsArchive != "" {
		res.Twin = TwinStreams
	}
	defer func() { res.Finished = time.Now() }()
	cg, err := joinCPUGroup(cfg.Name)
	if err != nil {
		fmt.Fprintf(cfg.Log, "bench: %v\n", err)
	}
	defer cg.leave()
	res.CPUAccounting = cg.dir != ""

	cells := slices.Clone(cfg.Cells)
	if slices.ContainsFunc(cells, func(c Cell) bool { return c.HighRate }) {
		fmt.Fprintf(cfg.Log, "bench: measuring the twin's capacity at %d MiB ...\n", cfg.CapacityStateMiB)
		capacity, err := measureCapacity(ctx, cfg, cfg.CapacityStateMiB)
		if err != nil {
			// The rest of the grid is still worth measuring; the high-rate cells go.
			fmt.Fprintf(cfg.Log, "bench: measuring the twin's capacity failed, no high-rate cells: %v\n", err)
			res.CapacityError = err.Error()
			cells = slices.DeleteFunc(cells, func(c Cell) bool { return c.HighRate })
		} else {
			res.CapacityEPS, res.CapacityStateMiB = capacity, cfg.CapacityStateMiB
			fmt.Fprintf(cfg.Log, "bench:   capacity %.0f events/s\n", capacity)
			for i := range cells {
				if cells[i].HighRate {
					cells[i].Rate = float64(int(CapacityShare * capacity))
				}
			}
		}
	}
	res.Cells = cells
	// Repeat by repeat over the whole grid, so that a run cut short has every cell.
	total, most := 0, 0
	for i := range cells {
		if cells[i].Repeats == 0 {
			cells[i].Repeats = cfg.Repeats
		}
		for _, method := range cfg.Methods {
			if !cfg.skips(cells[i], method) {
				total += cells[i].Repeats
			}
		}
		most = max(most, cells[i].Repeats)
	}
	n := 0
	for rep := range most {
		for _, cell := range cells {
			if rep >= cell.Repeats {
				continue
			}
			for _, method := range cfg.Methods {
				if cfg.skips(cell, method) {
					continue
				}
				n++
				fmt.Fprintf(cfg.Log, "bench: [%d/%d %s] %s, %s, %s, %.0f events/s, repeat %d ...\n", n, total,
					time.Since(res.Started).Round(time.Second), method, res.stateName(cell), linkName(cell.LinkMbit), cell.Rate, rep+1)
				run := measureOne(ctx, cfg, res, cg, cell, method, rep)
				fmt.Fprintf(cfg.Log, "bench:   stream gap %.0f ms, downtime %.0f ms, wire %.1f MiB (%.2fx), cpu %.2f s, lost %d, dup %d%s %s\n",
					run.StreamGapMs, run.DowntimeMs, float64(run.WireBytes)/(1<<20), run.Compression, run.CPUSeconds,
					run.Lost, run.Duplicated, digestNote(run), run.Error)
				res.Runs = append(res.Runs, run)
				res.Finished = time.Now()
				if cfg.OnRun != nil {
					cfg.OnRun(res)
				}
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
			}
		}
	}
	return res, nil
}

// TwinStreams is Results.Twin for the Kafka Streams twin.
const TwinStreams = "streams"

// check refuses a configuration the benchmark cannot run honestly.
func (c *Config) check() error {
	if c.StreamsArchive == "" {
		return nil
	}
	for _, m := range c.Methods {
		if !slices.Contains(StreamsMethods, m) {
			return fmt.Errorf("bench: method %s is not one for the Kafka Streams twin: want one of %v", m, StreamsMethods)
		}
	}
	for _, x := range c.Cells {
		if x.StateMiB != 0 || x.HighRate {
			return fmt.Errorf("bench: the Kafka Streams twin's state is its store (set by Devices): its cells take no state size (got %d MiB) and no high rate", x.StateMiB)
		}
	}
	if c.Broker != broker.Apache {
		return fmt.Errorf("bench: the Kafka Streams twin runs on Apache Kafka (its changelog is compacted; %s does not compact): use broker %s", c.Broker, broker.Apache)
	}
	return nil
}

// Retry measures again every run of prev that is not OK (same cell, method and repeat, the
// cells' rates as they were), replaces it in prev.Runs and keeps the failed one in
// prev.Replaced. For runs lost to something outside the benchmark (a daemon replaced under it).
func Retry(ctx context.Context, cfg Config, prev *Results) error {
	cfg.Cells = prev.Cells
	cfg.defaults()
	cg, err := joinCPUGroup(cfg.Name)
	if err != nil {
		fmt.Fprintf(cfg.Log, "bench: %v\n", err)
	}
	defer cg.leave()
	var todo []int
	for i, x := range prev.Runs {
		if !x.OK() {
			todo = append(todo, i)
		}
	}
	start := time.Now()
	for n, i := range todo {
		old := prev.Runs[i]
		fmt.Fprintf(cfg.Log, "bench: retry [%d/%d %s] %s, %d MiB, %s, %.0f events/s, repeat %d (was: %s) ...\n", n+1, len(todo),
			time.Since(start).Round(time.Second), old.Method, old.StateMiB, linkName(old.LinkMbit), old.Rate, old.Repeat+1, old.Error)
		run := measureOne(ctx, cfg, prev, cg, old.Cell, old.Method, old.Repeat)
		fmt.Fprintf(cfg.Log, "bench:   stream gap %.0f ms, lost %d, dup %d%s %s\n", run.StreamGapMs, run.Lost, run.Duplicated, digestNote(run), run.Error)
		prev.Runs[i] = run
		prev.Replaced = append(prev.Replaced, old)
		prev.Finished = time.Now()
		if cfg.OnRun != nil {
			cfg.OnRun(prev)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func digestNote(r Run) string {
	switch {
	case !r.DigestChecked:
		return ""
	case r.DigestEqual:
		return ", state digest equal"
	default:
		return ", STATE DIGEST DIFFERS"
	}
}

func linkName(mbit int) string {
	if mbit == 0 {
		return "unthrottled"
	}
	return fmt.Sprintf("%d Mbit/s", mbit)
}

func (cfg *Config) start(ctx context.Context, state, link int, rate float64, twinArgs []string, standby bool) (*scenario.Scenario, error) {
	// Leftovers of a crashed run under the same name would make Up fail or the run lie. A
	// large twin killed by the previous lab's Down can take a while to leave its cgroup
	// (seen after 512 MiB standby runs: "device or resource busy"), so try for a while.
	var err error
	for try := 0; try < 20; try++ {
		if err = lab.Teardown(ctx, cfg.BaseDir, cfg.Name); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: remove the leftovers of lab %s: %w", cfg.Name, err)
	}
	sc := scenario.Config{
		Lab: lab.Config{Name: cfg.Name, BaseDir: cfg.BaseDir, Hosts: []string{"cloud", "fog"},
			Subnet: cfg.Subnet, Broker: cfg.Broker, UplinkMbit: link},
		TwinBinary: cfg.TwinBinary, StateMiB: state, Rate: rate, Devices: cfg.Devices,
		TwinArgs: twinArgs, Standby: standby,
	}
	if cfg.StreamsArchive != "" {
		sc.TwinBinary, sc.TwinImageArchive, sc.StateMiB = "", cfg.StreamsArchive, 0
	}
	return scenario.Start(ctx, sc)
}

func measureOne(ctx context.Context, cfg Config, res *Results, cg *cpuGroup, cell Cell, method string, rep int) (run Run) {
	run = Run{Cell: cell, Method: method, Repeat: rep}
	fail := func(err error) Run {
		if run.Error == "" && err != nil {
			run.Error = err.Error()
		}
		return run
	}
	streams := cfg.StreamsArchive != ""
	digest := !streams && rep < cfg.DigestRepeats && (method == scenario.MethodRestart || method == scenario.MethodStandby)
	args := twinArgs()
	if streams {
		args = StreamsTwinArgs()
	}
	if digest {
		args = append(args, "-digest")
	}
	s, err := cfg.start(ctx, cell.StateMiB, cell.LinkMbit, cell.Rate, args, method == scenario.MethodStandby)
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	src, dst := s.Lab.Hosts[0], s.Lab.Hosts[1]
	if _, ok := res.BandwidthMBps[cell.LinkMbit]; !ok {
		if bw, err := lab.MeasureBandwidth(ctx, src, dst, bandwidthProbeBytes(cell.LinkMbit)); err == nil {
			res.BandwidthMBps[cell.LinkMbit] = bw / 1e6
		}
	}
	if method == scenario.MethodStandby {
		// The standby must hold the whole state (the bootstrap) before anything is measured.
		if err := s.WaitStandby(ctx, int64(cell.StateMiB)<<20, 2000, 10*time.Minute); err != nil {
			return fail(err)
		}
	}
	if streams {
		// Its restore listener counts only what comes after the start: wait for the twin's
		// first status line with its tasks, then read the JVM before the move.
		if err := waitStatus(ctx, src.LogPath(scenario.ContainerID), func(st scenario.TwinStatus) bool { return st.ActiveTasks > 0 }, 2*time.Minute); err != nil {
			return fail(err)
		}
	}
	sp := startSampler(func() sample {
		return sample{at: time.Now(), cpu: cg.usage(cfg.Name), link: linkBytes(dst.Veth)}
	})
	samples := []sample(nil)
	defer func() {
		if samples == nil {
			sp.finish()
		}
	}()
	// The readings the sensors sent while the twin bootstrapped its changelog (up to half a
	// minute at 512 MiB) are worked off within a second; they are not the move's.
	time.Sleep(settle)
	standbyPath := dst.CgroupsPath(lab.Namespace, scenario.StandbyID)
	t0, sbCPU0 := time.Now(), containerCPU(standbyPath)
	time.Sleep(cfg.Dwell) // the baseline
	if method == scenario.MethodStandby {
		el := time.Since(t0).Seconds()
		now, _ := at(sp.snapshot(), time.Now().Add(-60*time.Millisecond))
		then, _ := at(sp.snapshot(), t0)
		run.Standby = &StandbyCost{
			LinkBytesPerSec: float64(now.link-then.link) / (now.at.Sub(then.at).Seconds()),
			CPUPerSec:       (containerCPU(standbyPath) - sbCPU0).Seconds() / el,
			RSSBytes:        containerRSS(standbyPath),
			ActiveRSSBytes:  containerRSS(src.CgroupsPath(lab.Namespace, scenario.ContainerID)),
		}
	}
	if streams {
		if st, err := scenario.LastStatus(src.LogPath(scenario.ContainerID)); err == nil {
			run.JVM = &JVMStats{RSSBytes: st.RSSKiB << 10, HeapUsedMiB: st.HeapUsedMiB, Threads: st.Threads,
				ActiveTasks: st.ActiveTasks, StandbyTasks: st.StandbyTasks}
		}
	}
	var m scenario.Migration
	switch method {
	case scenario.MethodFtwin:
		m = s.Migrate(ctx, dst.Name)
	case scenario.MethodReplay:
		m = s.MigrateReplay(ctx, dst.Name)
	case scenario.MethodContainerd:
		m = s.MoveContainerd(ctx, dst.Name)
	case scenario.MethodNaive:
		m = s.MoveNaive(ctx, dst.Name)
	case scenario.MethodRestart:
		m = s.Restart(ctx, dst.Name)
	case scenario.MethodStandby:
		m = s.MoveStandby(ctx)
	case scenario.MethodFloor:
		m = s.Floor(ctx)
	default:
		return fail(fmt.Errorf("unknown method %q", method))
	}
	if m.Err != nil {
		run.Error = m.Err.Error()
	} else if err := s.WaitProcessing(ctx, 10*time.Minute); err != nil {
		run.Error = err.Error()
	}
	t1 := time.Now()
	time.Sleep(cfg.Dwell)
	t2 := time.Now()
	out, err := s.Finish(ctx)
	samples = sp.finish()
	if err != nil && run.Error == "" {
		run.Error = err.Error()
	}
	run.EventsIn, run.EventsOut, run.Lost, run.Duplicated, run.Rebalances = out.EventsIn, out.EventsOut, out.Lost, out.Duplicated, out.Rebalances
	run.RunGapMs, run.IntervalMs = out.StreamGapMs, out.IntervalMs
	run.Latency = latencySince(out.Events, t0)
	run.SteadyP99Ms = latencyBetween(out.Events, t0, m.Start).P99
	run.MoveP99Ms = latencyBetween(out.Events, m.Start, m.End).P99
	if len(out.Migrations) != 1 {
		return fail(fmt.Errorf("bench: %d migrations recorded, want 1", len(out.Migrations)))
	}
	mr := out.Migrations[0]
	run.StreamGapMs, run.DowntimeMs, run.Pauses, run.ResumedMs, run.ThroughputEPS = mr.StreamGapMs, mr.DowntimeMs, mr.Pauses, mr.ResumedMs, mr.ThroughputEPS
	run.MoverDowntimeMs, run.FrozenMs, run.TotalMs = mr.MoverDowntimeMs, mr.FrozenMs, mr.TotalMs
	run.SnapshotPauseMs, run.CatchUpMs, run.Replayed, run.CutoverPauseMs = mr.SnapshotPauseMs, mr.CatchUpMs, mr.Replayed, mr.CutoverPauseMs
	run.MovedBytes, run.SkippedBytes = mr.BytesSent, mr.SkippedBytes
	run.RestoredRecords, run.RestoreMs = mr.RestoredRecords, mr.RestoreMs

	// Counters over the move's window [start, resumed]; CPU beyond the baseline: the lower of
	// the rates over the dwell before the move and the dwell after it (either can hold a
	// spike: the end of a bootstrap, a catch-up).
	start := m.Start
	resumed := start.Add(time.Duration(mr.ResumedMs * float64(time.Millisecond)))
	if a, b, err := window(samples, start, resumed); err == nil {
		base := math.Inf(1)
		for _, w := range [][2]time.Time{{t0, start}, {t1, t2}} {
			if x, y, err := window(samples, w[0], w[1]); err == nil && w[1].After(w[0]) {
				base = math.Min(base, float64(y.cpu-x.cpu)/float64(w[1].Sub(w[0])))
			}
		}
		if !math.IsInf(base, 1) {
			run.CPUSeconds = max(0, (b.cpu-a.cpu).Seconds()-base*resumed.Sub(start).Seconds())
		}
		run.LinkBytes = b.link - a.link
	}
	switch method {
	case scenario.MethodFloor:
		run.WireBytes = mr.CompressedBytes
	case scenario.MethodRestart, scenario.MethodStandby:
		run.WireBytes = run.LinkBytes
	default:
		run.WireBytes = mr.WireBytes
	}
	if run.WireBytes > 0 {
		run.Compression = float64(run.MovedBytes) / float64(run.WireBytes)
	}
	if digest || method == scenario.MethodReplay {
		run.DigestChecked = true
		run.SourceDigest, run.TargetDigest = mr.SourceDigest, mr.TargetDigest
		run.DigestEqual = mr.SourceDigest != "" && mr.SourceDigest == mr.TargetDigest
		if !run.DigestEqual && run.Error == "" {
			run.Error = fmt.Sprintf("state digest: source %q, target %q", mr.SourceDigest, mr.TargetDigest)
		}
	}
	return run
}

// twinArgs is the twin's configuration, the same for every method: every state change to the
// changelog (a Kafka Streams store's way), and a transaction timeout of 5 minutes, within which
// the hookless containerd path must finish its move (it freezes the twin with a transaction
// open; with kgo's 40 s default a 512 MiB move over 100 Mbit/s outlasts it and the restored
// twin is fenced).
func twinArgs() []string {
	return []string{"-rebuild-from-changelog", "-transaction-timeout", "5m"}
}

// StreamsTwinArgs is the Kafka Streams twin's configuration, the same for every method: the
// default commit interval (100 ms, exactly_once_v2's) and its store's changelog in 1 MiB
// segments cleaned eagerly, as a Streams user who cares about restore time sets it (the broker's
// default segment is 1 GiB, never compacted before it rolls: a restart would replay every
// update since the start).
func StreamsTwinArgs() []string {
	return []string{"-changelog-segment-bytes", "1048576"}
}

// waitStatus waits until the last status line in the twin's log at path satisfies ok.
func waitStatus(ctx context.Context, path string, ok func(scenario.TwinStatus) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, _ := scenario.LastStatus(path)
		if ok(st) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: the twin's status did not come ready in %v (last %+v); see %s", timeout, st, path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// settle is how long a run waits after the twin's first output before it measures.
const settle = time.Second

// latencySince is the latency of the readings the sensors took from t0 on (the measured part
// of the run: the dwell before the move, the move, the dwell after it).
func latencySince(events []verify.Event, t0 time.Time) scenario.LatencyMs {
	return latencyBetween(events, t0, time.Time{})
}

// latencyBetween is the latency of the readings the sensors took in [from, to] (to zero: no
// end).
func latencyBetween(events []verify.Event, from, to time.Time) scenario.LatencyMs {
	var in []verify.Event
	for _, e := range events {
		if e.SensorNS >= from.UnixNano() && (to.IsZero() || e.SensorNS <= to.UnixNano()) {
			in = append(in, e)
		}
	}
	l := verify.Latencies(in)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return scenario.LatencyMs{P50: ms(l.P50), P99: ms(l.P99), P999: ms(l.P999), Max: ms(l.Max)}
}

// window returns the counters at from and to.
func window(s []sample, from, to time.Time) (sample, sample, error) {
	a, err := at(s, from)
	if err != nil {
		return a, a, err
	}
	b, err := at(s, to)
	return a, b, err
}

// capacityOffer is the sensors' rate when the capacity is measured: more than they can produce.
const capacityOffer = 40000

// measureCapacity offers the twin all the sensors can produce (capacityOffer) for a few seconds and measures its
// committed output rate from a second in until the last output (the backlog worked off
// included). If the rate reaches the offer, the twin kept up and the figure is a lower bound
// of its capacity. On this machine the sensors and the broker share the cores with the twin, so it is
// the capacity of the pipeline as the benchmark runs it.
func measureCapacity(ctx context.Context, cfg Config, state int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	s, err := cfg.start(ctx, state, 0, capacityOffer, twinArgs(), false)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	from := time.Now().Add(time.Second)
	time.Sleep(6 * time.Second)
	out, err := s.Finish(ctx)
	if err != nil {
		return 0, err
	}
	if !out.Verify.OK() || out.EventsOut != out.EventsIn {
		return 0, fmt.Errorf("lost %d, duplicated %d, %d of %d out", out.Lost, out.Duplicated, out.EventsOut, out.EventsIn)
	}
	return outputRate(out.Events, from)
}

// outputRate is the outputs processed from from on per second until the last of them.
func outputRate(events []verify.Event, from time.Time) (float64, error) {
	var n int
	var last int64
	for _, e := range events {
		if e.ProcessedNS >= from.UnixNano() {
			n++
			last = max(last, e.ProcessedNS)
		}
	}
	d := time.Duration(last - from.UnixNano())
	if n < 1000 || d < time.Second {
		return 0, fmt.Errorf("bench: only %d outputs in %v: too few to measure a rate", n, d)
	}
	return float64(n) / d.Seconds(), nil
}

// bandwidthProbeBytes sends about a second's worth at the link's rate (64 MiB unthrottled).
func bandwidthProbeBytes(mbit int) int64 {
	if mbit == 0 {
		return 64 << 20
	}
	return int64(mbit) * 1e6 / 8
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
	files := map[string]func(io.Writer) error{"bench.md": r.WriteMarkdown, "bench.svg": r.WriteSVG}
	if r.Twin == TwinStreams {
		delete(files, "bench.svg") // one state size: no curve to plot
	}
	for name, write := range files {
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

// Load reads a bench.json written by Write (to render it again).
func Load(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: parse %s: %w", path, err)
	}
	return &r, nil
}
