// Package scenario runs the digital-twin scenario on a lab: a cloud and a fog host, a Kafka
// broker, sensors producing at a fixed rate, the twin (a transactional Kafka consumer with
// kafkahooks) in a container, live migrations between the hosts, and at the end a
// read_committed verification of the twin's output: events lost, duplicated, stream gaps and
// consumer-group rebalances. `ftwin-migrate demo` and the benchmark are built on it.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/plugin"
	"github.com/ftwin-migrate/ftwin-migrate/sensors"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// Topics and names the scenario uses.
const (
	InputTopic  = "sensors"
	OutputTopic = "twin-state"
	Group       = "ftwin-twin"
	ContainerID = "twin"
	// StandbyID is the standby twin's container (Config.Standby).
	StandbyID = "twin-standby"
)

// Config describes a scenario run.
type Config struct {
	// Lab configures the lab (hosts, broker kind, subnet, uplink). At least two hosts.
	Lab lab.Config
	// Brokers, when set, is an existing Kafka cluster to use instead of the lab's broker; it
	// must be reachable from the lab's hosts.
	Brokers []string
	// TwinBinary is the static twin executable (test/workloads/twin).
	TwinBinary string
	// TwinImageArchive, in place of TwinBinary, is the image archive of a twin that takes the
	// common arguments only (-brokers, -group, -in, -out, -instance-id; then TwinArgs): the Kafka
	// Streams twin (twins/streams; BuildStreamsTwin writes its archive). StateMiB, Devices and
	// Standby are the Go twin's and do not apply to it.
	TwinImageArchive string
	// StateMiB is the twin's state size. Default 16.
	StateMiB int
	// Rate is sensor events per second. Default 200.
	Rate float64
	// Devices is the number of sensors, the twin's fleet (each has an equal share of its
	// state). Default 256.
	Devices int
	// Standby also starts a standby twin on the second host, for MoveStandby. The Go twin's
	// (TwinBinary) runs with -standby and replicates the changelog; TwinArgs must hold
	// -rebuild-from-changelog. The Kafka Streams twin's (TwinImageArchive) is a second member
	// of the application with num.standby.replicas=1 whose task assignor keeps every active
	// task on the first (StreamsStandbyArgs, StreamsActiveArgs).
	Standby bool
	// Partitions of the input topic. Default 3.
	Partitions int32
	// TwinArgs are added to the twin's command line.
	TwinArgs []string
	// AgentEdit changes a host's agent configuration (tests inject failures). Not on a lab
	// whose hosts run the plugin (Lab.Plugin: the daemons serve the receive role; use
	// Lab.PluginEdit).
	AgentEdit map[string]func(*agent.Config)
	// OwnAddress runs the twin with an address of its own on the lab network, which moves with
	// it (lab.Workload.OwnAddress): its broker connections are restored established and carry
	// on. Default: the host's network, connections restored closed (the client reconnects).
	OwnAddress bool
	// Migrator runs a migration the scenario asks for (Migrate, MigrateWith) from host from.
	// Default: migrate.Migrate in this process on from's containerd; on a lab whose hosts run
	// the plugin (Lab.Plugin), the plugin on from's containerd socket (ViaPlugin).
	Migrator func(ctx context.Context, from *lab.Host, o migrate.Options) (*migrate.Report, error)
}

// ViaPlugin is the Migrator of a lab on the plugin daemon: the migration runs in the source
// host's containerd, asked for over its socket (plugin.Migrate, plugin.Request).
func ViaPlugin(ctx context.Context, from *lab.Host, o migrate.Options) (*migrate.Report, error) {
	conn, err := plugin.Dial(from.Address())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return plugin.Migrate(namespaces.WithNamespace(ctx, o.Namespace), conn, plugin.Request(o, ""), nil)
}

// Scenario is a running scenario.
type Scenario struct {
	cfg     Config
	Lab     *lab.Lab
	Brokers []string
	pkiDir  string
	agents  map[string]*lab.RunningAgent
	at      string // host the twin runs on
	twin    lab.Workload
	// standbyAt is the host of the standby twin (Config.Standby), "" if none or taken over.
	standbyAt string
	// runningID is the container the twin runs in (ContainerID, or StandbyID after a takeover).
	runningID string

	stopLoad func()
	loadDone chan loadResult
	watch    *groupWatch

	Migrations []Migration
}

type loadResult struct {
	res sensors.Result
	err error
}

// Migration is one migration of the twin and its window in time.
type Migration struct {
	// Method names how the twin moved (MethodFtwin, MethodNaive, MethodRestart, MethodFloor).
	Method     string
	From, To   string
	Report     *migrate.Report // ftwin-migrate's report (MethodFtwin only)
	Err        error
	Start, End time.Time
	// Downtime is the mover's own view: from the freeze (or stop) to the twin running again
	// (Finish measures the downtime the output shows, the same way for every method); Frozen
	// is CRIU's frozen time; Bytes is the state the move carried (the CRIU image or checkpoint
	// as written, or the changelog bytes read), WireBytes what crossed the link for it
	// (compressed); Skipped what was not sent because the target held it.
	Downtime         time.Duration
	Frozen           time.Duration
	Bytes, WireBytes int64
	Skipped          int64
	// Compressed is, for MethodFloor (nothing is sent), the size of its CRIU image through the
	// same zstd level ftwin-migrate's transfer uses: the measured compression of the state.
	Compressed int64
	// Digests are the source's state digest when it stopped and the target's after its
	// rebuild or takeover (kafka methods, twin -digest), read from the twins' status lines.
	SourceDigest, TargetDigest string
	// RestoredRecords and Restore are, for the kafka methods of the Kafka Streams twin, what
	// the target's stores restored from the changelog before it processed (the whole store for
	// a restart, the tail a standby had not yet replicated) and how long that took, as Streams'
	// restore listener saw it (the twin's status lines).
	RestoredRecords int64
	Restore         time.Duration
	// CPU is the CPU time this process spent on the move (migrator and agents run in it).
	CPU time.Duration
	// SnapshotPause and CutoverPause are, for MethodReplay, the source's two pauses as the
	// migrator measured them (Report.Replay).
	SnapshotPause, CutoverPause time.Duration
}

// Start brings everything up and returns once the twin has produced output.
// On error everything it started is stopped again.
func Start(ctx context.Context, cfg Config) (s *Scenario, err error) {
	if cfg.StateMiB == 0 {
		cfg.StateMiB = 16
	}
	if cfg.Rate == 0 {
		cfg.Rate = 200
	}
	if cfg.Devices == 0 {
		cfg.Devices = 256
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 3
	}
	if len(cfg.Lab.Hosts) == 0 {
		cfg.Lab.Hosts = []string{"cloud", "fog"}
	}
	if len(cfg.Lab.Hosts) < 2 {
		return nil, errors.New("scenario: the lab needs at least two hosts")
	}
	if len(cfg.Brokers) > 0 {
		cfg.Lab.Broker = "none"
	}
	l, err := lab.Up(ctx, cfg.Lab)
	if err != nil {
		return nil, err
	}
	s = &Scenario{cfg: cfg, Lab: l, agents: map[string]*lab.RunningAgent{}, at: l.Hosts[0].Name, runningID: ContainerID}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	s.Brokers = cfg.Brokers
	if len(s.Brokers) == 0 {
		if l.BrokerAddr == "" {
			return s, errors.New("scenario: no Kafka: give the lab a broker or Brokers")
		}
		s.Brokers = []string{l.BrokerAddr}
	}

	s.pkiDir = l.Dir + "/pki"
	var hosts []pki.Host
	for _, h := range l.Hosts {
		hosts = append(hosts, pki.Host{Name: h.Name, IPs: []net.IP{net.ParseIP(h.IP)}})
	}
	if err := pki.Init(s.pkiDir, hosts); err != nil {
		return s, err
	}
	twin := lab.Workload{ID: ContainerID, Binary: cfg.TwinBinary, Args: append([]string{
		"-brokers", strings.Join(s.Brokers, ","), "-group", Group, "-in", InputTopic, "-out", OutputTopic,
		"-state-mib", fmt.Sprint(cfg.StateMiB), "-instance-id", "twin-1", "-devices", fmt.Sprint(cfg.Devices),
	}, cfg.TwinArgs...), OwnAddress: cfg.OwnAddress}
	if cfg.TwinImageArchive != "" {
		twin = lab.Workload{ID: ContainerID, ImageArchive: cfg.TwinImageArchive, Args: append([]string{
			"-brokers", strings.Join(s.Brokers, ","), "-group", Group, "-in", InputTopic, "-out", OutputTopic, "-instance-id", "twin-1",
		}, cfg.TwinArgs...), OwnAddress: cfg.OwnAddress}
		if cfg.Standby {
			twin.Args = append(twin.Args, StreamsActiveArgs...)
		}
	}
	if l.Plugin && len(cfg.AgentEdit) > 0 {
		return s, errors.New("scenario: AgentEdit on a lab of the plugin daemon: its hosts' daemons receive (edit them with Lab.PluginEdit)")
	}
	for _, h := range l.Hosts {
		if !l.Plugin {
			a, err := h.StartAgent(ctx, s.pkiDir, cfg.AgentEdit[h.Name])
			if err != nil {
				return s, err
			}
			s.agents[h.Name] = a
		}
		if _, err := h.ImportImage(ctx, twin); err != nil {
			return s, err
		}
	}

	if err := s.createTopics(ctx); err != nil {
		return s, err
	}
	s.watch = watchGroup(s.Brokers, Group)
	s.twin = twin
	if err := l.Hosts[0].Run(ctx, twin); err != nil {
		return s, err
	}
	if cfg.Standby {
		sb := twin
		sb.ID, sb.Args = StandbyID, append(append([]string{}, twin.Args...), "-standby", "-hook-socket", "")
		if cfg.TwinImageArchive != "" {
			sb.Args = append(append([]string{}, twin.Args...), StreamsStandbyArgs...)
		}
		if err := l.Hosts[1].Run(ctx, sb); err != nil {
			return s, err
		}
		s.standbyAt = l.Hosts[1].Name
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopLoad = cancel
	s.loadDone = make(chan loadResult, 1)
	go func() {
		res, err := sensors.Run(lctx, sensors.Config{Brokers: s.Brokers, Topic: InputTopic, Partitions: cfg.Partitions, Devices: cfg.Devices, Rate: cfg.Rate})
		s.loadDone <- loadResult{res, err}
	}()
	return s, s.waitOutput(ctx, 1, 60*time.Second)
}

func (s *Scenario) createTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := sensors.EnsureTopic(ctx, cl, InputTopic, s.cfg.Partitions, nil); err != nil {
		return fmt.Errorf("scenario: topic %s: %w", InputTopic, err)
	}
	if err := sensors.EnsureTopic(ctx, cl, OutputTopic, s.cfg.Partitions, nil); err != nil {
		return fmt.Errorf("scenario: topic %s: %w", OutputTopic, err)
	}
	return nil
}

// waitOutput waits until the output topic holds at least n committed events.
func (s *Scenario) waitOutput(ctx context.Context, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rep, err := s.verify(ctx, nil)
		if err == nil && rep.EventsOut >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scenario: the twin produced %d of %d events in %v (last error: %v); see %s",
				rep.EventsOut, n, timeout, err, s.host(s.at).LogPath(ContainerID))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (s *Scenario) verify(ctx context.Context, expected map[string]int64) (verify.Report, error) {
	vctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	opts := []verify.Option{}
	if expected != nil {
		opts = append(opts, verify.ExpectMaxSeq(expected))
	}
	return verify.Output(vctx, s.Brokers, OutputTopic, opts...)
}

func (s *Scenario) host(name string) *lab.Host {
	h, _ := s.Lab.Host(name)
	return h
}

// At is the host the twin runs on.
func (s *Scenario) At() string { return s.at }

// WaitProcessing waits until the twin, where it runs now, reports progress: its status line's
// processed count grows (after a move, the new instance processes).
func (s *Scenario) WaitProcessing(ctx context.Context, timeout time.Duration) error {
	path := s.host(s.at).LogPath(s.runningID)
	deadline := time.Now().Add(timeout)
	first, _ := LastStatus(path)
	for {
		st, _ := LastStatus(path)
		if st.Processed > first.Processed && st.State == "running" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scenario: the twin on %s made no progress in %v (status %+v); see %s", s.at, timeout, st, path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Migrate moves the twin to host to, with its Kafka hook and the broker check.
func (s *Scenario) Migrate(ctx context.Context, to string) Migration {
	return s.MigrateWith(ctx, to)
}

// MigrateReplay moves the twin to host to by replay (see MethodReplay).
func (s *Scenario) MigrateReplay(ctx context.Context, to string, edits ...func(*migrate.Options)) Migration {
	return s.MigrateWith(ctx, to, append([]func(*migrate.Options){func(o *migrate.Options) { o.Mode = migrate.ModeReplay }}, edits...)...)
}

// MigrateWith moves the twin to host to as Migrate does, with the options edited.
func (s *Scenario) MigrateWith(ctx context.Context, to string, edits ...func(*migrate.Options)) Migration {
	from := s.host(s.at)
	m := Migration{Method: MethodFtwin, From: s.at, To: to, Start: time.Now()}
	cpu := cpuTime()
	m.Err = func() error {
		if _, err := s.Lab.Host(to); err != nil {
			return err
		}
		tlsCfg, err := pki.ClientConfig(s.pkiDir, from.Name, to)
		if err != nil {
			return err
		}
		o := migrate.Options{
			Namespace: lab.Namespace, Container: ContainerID, Target: s.agentAddr(to), TLS: tlsCfg,
			SourceHost: from.Name, Brokers: s.Brokers, PhaseTimeout: 2 * time.Minute,
			Network: from.Network(),
		}
		for _, e := range edits {
			e(&o)
		}
		if o.Mode == migrate.ModeReplay {
			m.Method = MethodReplay
		}
		migrator := s.cfg.Migrator
		switch {
		case migrator != nil:
		case s.Lab.Plugin:
			migrator = ViaPlugin
		default:
			migrator = inProcess
		}
		m.Report, err = migrator(ctx, from, o)
		return err
	}()
	if r := m.Report; r != nil {
		m.Downtime, m.Bytes, m.WireBytes = r.Downtime, r.Transfer.BytesSent, r.Transfer.WireBytes
		if r.Replay != nil {
			m.SnapshotPause, m.CutoverPause = r.Replay.SnapshotPause, r.Replay.CutoverPause
			m.SourceDigest, m.TargetDigest = r.Replay.SourceDigest, r.Replay.CopyDigest
		}
		if r.CRIU != nil {
			m.Frozen = time.Duration(r.CRIU.GetFrozenTime()) * time.Microsecond
		}
	}
	return s.record(m, cpu)
}

// inProcess is the default Migrator: migrate.Migrate in this process.
func inProcess(ctx context.Context, from *lab.Host, o migrate.Options) (*migrate.Report, error) {
	client, err := from.Client()
	if err != nil {
		return nil, err
	}
	defer client.Close()
	return migrate.Migrate(ctx, client, o)
}

// agentAddr is the receive endpoint of host name: its in-process agent's, or its daemon's.
func (s *Scenario) agentAddr(name string) string {
	if a := s.agents[name]; a != nil {
		return a.Addr
	}
	return s.host(name).AgentAddr()
}

// Result is what a scenario run shows. Its JSON is the demo's --json output.
type Result struct {
	Migrations []MigrationResult `json:"migrations"`
	EventsIn   int64             `json:"events_in"`
	EventsOut  int64             `json:"events_out"`
	Lost       int64             `json:"lost"`
	Duplicated int64             `json:"duplicated"`
	OutOfOrder int64             `json:"out_of_order"`
	Rebalances int               `json:"rebalances"`
	// GroupProtocol is the protocol the broker reports for the twin's group: "classic" or
	// "consumer" (KIP-848).
	GroupProtocol string `json:"group_protocol,omitempty"`
	// StreamGapMs is the longest pause between consecutive outputs over the whole run.
	StreamGapMs float64 `json:"stream_gap_ms"`
	// IntervalMs is the median pause between consecutive output batches (the normal interval;
	// outputs of one batch share a processing time).
	IntervalMs float64 `json:"interval_ms"`
	// Latency is the event latency over the run, sensor timestamp to output (verify.Latencies).
	Latency LatencyMs     `json:"latency_ms"`
	Verify  verify.Report `json:"-"`
	// Events are the committed outputs; LoadStopped is when the sensors were told to stop.
	Events      []verify.Event `json:"-"`
	LoadStopped time.Time      `json:"-"`
}

// LatencyMs is verify.Latency in milliseconds.
type LatencyMs struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// MigrationResult is one migration's line.
type MigrationResult struct {
	Method string `json:"method"`
	From   string `json:"from"`
	To     string `json:"to"`
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
	// DowntimeMs and StreamGapMs are what the output shows (verify.MoveStats): the pauses
	// overlapping the move's window, beyond the normal interval, summed; and the longest.
	DowntimeMs  float64 `json:"downtime_ms"`
	StreamGapMs float64 `json:"stream_gap_ms"`
	Pauses      int     `json:"pauses"`
	// ResumedMs is when output resumed after the move, from its start; ThroughputEPS the
	// outputs per second until then.
	ResumedMs     float64 `json:"resumed_ms"`
	ThroughputEPS float64 `json:"throughput_eps"`
	// MoverDowntimeMs is the mover's own view (Migration.Downtime).
	MoverDowntimeMs float64 `json:"mover_downtime_ms"`
	FrozenMs        float64 `json:"criu_frozen_ms"`
	TotalMs         float64 `json:"total_ms"`
	BytesSent       int64   `json:"bytes_sent"`
	WireBytes       int64   `json:"wire_bytes"`
	SkippedBytes    int64   `json:"skipped_bytes,omitempty"`
	CompressedBytes int64   `json:"compressed_bytes,omitempty"`
	// CPUSeconds is the CPU time of this process (migrator and agents) during the move.
	CPUSeconds   float64 `json:"cpu_seconds"`
	SourceDigest string  `json:"source_digest,omitempty"`
	TargetDigest string  `json:"target_digest,omitempty"`
	Boundary     string  `json:"boundary,omitempty"`
	// SnapshotPauseMs and CutoverPauseMs are, for MethodReplay, the source's two pauses as
	// the migrator measured them (Migration.SnapshotPause, CutoverPause); CatchUpMs is how
	// long the shadow took to come within MaxLag and Replayed the records it applied
	// (Report.Replay).
	SnapshotPauseMs float64 `json:"snapshot_pause_ms,omitempty"`
	CutoverPauseMs  float64 `json:"cutover_pause_ms,omitempty"`
	CatchUpMs       float64 `json:"catch_up_ms,omitempty"`
	Replayed        int64   `json:"replayed,omitempty"`
	// RestoredRecords and RestoreMs: the Kafka Streams twin's restoration from its changelog
	// on the target (kafka methods; Migration.RestoredRecords, Restore).
	RestoredRecords int64   `json:"restored_records,omitempty"`
	RestoreMs       float64 `json:"restore_ms,omitempty"`
	// BoundaryChecked: the broker's committed offsets and the restored copy's resume position
	// both equal the boundary.
	BoundaryChecked bool `json:"boundary_checked"`
}

// Finish stops the sensors, waits for the twin to process everything, verifies the output and
// returns the result.
func (s *Scenario) Finish(ctx context.Context) (Result, error) {
	var res Result
	res.LoadStopped = time.Now()
	s.stopLoad()
	load := <-s.loadDone
	if load.err != nil {
		return res, fmt.Errorf("scenario: sensors: %w", load.err)
	}
	res.EventsIn = load.res.Produced
	if err := s.waitOutput(ctx, load.res.Produced, 90*time.Second); err != nil {
		// Still verify: the report says what is missing.
		res.Verify, _ = s.verify(ctx, load.res.MaxSeq)
	}
	events, rep, err := s.readOutput(ctx, load.res.MaxSeq)
	if err != nil {
		return res, err
	}
	res.Verify, res.Events = rep, events
	res.EventsOut, res.Lost, res.Duplicated, res.OutOfOrder = rep.EventsOut, rep.Lost, rep.Duplicated, rep.OutOfOrder
	res.Rebalances = s.watch.stop()
	res.GroupProtocol = s.watch.protocol()
	res.StreamGapMs = ms(rep.StreamGap)
	normal := verify.NormalInterval(verify.Stamps(events))
	res.IntervalMs = ms(normal)
	lat := verify.Latencies(events)
	res.Latency = LatencyMs{P50: ms(lat.P50), P99: ms(lat.P99), P999: ms(lat.P999), Max: ms(lat.Max)}
	for i := range s.Migrations {
		s.kafkaStats(&s.Migrations[i])
	}
	for _, m := range s.Migrations {
		mv := verify.MoveStats(events, m.Start, m.End, normal)
		mr := MigrationResult{Method: m.Method, From: m.From, To: m.To, Result: "committed",
			DowntimeMs: ms(mv.Downtime), StreamGapMs: ms(mv.StreamGap), Pauses: mv.Pauses,
			ResumedMs: ms(mv.Resumed.Sub(m.Start)), ThroughputEPS: mv.Throughput,
			MoverDowntimeMs: ms(m.Downtime), TotalMs: ms(m.End.Sub(m.Start)), FrozenMs: ms(m.Frozen),
			BytesSent: m.Bytes, WireBytes: m.WireBytes, SkippedBytes: m.Skipped, CompressedBytes: m.Compressed,
			CPUSeconds: m.CPU.Seconds(), SourceDigest: m.SourceDigest, TargetDigest: m.TargetDigest,
			SnapshotPauseMs: ms(m.SnapshotPause), CutoverPauseMs: ms(m.CutoverPause),
			RestoredRecords: m.RestoredRecords, RestoreMs: ms(m.Restore)}
		if m.Err != nil {
			mr.Result, mr.Error = "rolled back", m.Err.Error()
		}
		if r := m.Report; r != nil {
			if c := r.BoundaryCheck; c != nil {
				mr.BoundaryChecked = c.CommittedBefore && c.ResumedMatch
			}
			if b := r.Boundary; b != nil {
				mr.Boundary = b.Offsets.String()
			}
			if rp := r.Replay; rp != nil {
				mr.CatchUpMs, mr.Replayed = ms(rp.CatchUp), rp.Replayed
			}
		}
		res.Migrations = append(res.Migrations, mr)
	}
	return res, nil
}

// kafkaStats fills in what the kafka methods' twins report in their status lines: the
// changelog bytes the target read and the digests of the source at its stop and of the target
// after its rebuild or takeover.
func (s *Scenario) kafkaStats(m *Migration) {
	var target string
	switch m.Method {
	case MethodRestart:
		target = s.host(m.To).LogPath(ContainerID)
	case MethodStandby:
		target = s.host(m.To).LogPath(StandbyID)
	default:
		return
	}
	src, _ := LastStatus(s.host(m.From).LogPath(ContainerID))
	dst := firstDigest(target)
	if dst.Digest == "" { // twins without -digest: the bytes still show
		dst, _ = LastStatus(target)
	}
	m.SourceDigest, m.TargetDigest = src.Digest, dst.Digest
	if m.Method == MethodRestart {
		m.Bytes = dst.RebuiltBytes
	} else {
		m.Bytes = dst.TakeoverBytes
	}
	if last, _ := LastStatus(target); s.cfg.TwinImageArchive != "" {
		m.RestoredRecords, m.Restore = last.RestoredRecords, time.Duration(last.RestoreMs)*time.Millisecond
	}
}

// readOutput reads every committed output event.
func (s *Scenario) readOutput(ctx context.Context, expected map[string]int64) ([]verify.Event, verify.Report, error) {
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	events, _, err := verify.Events(rctx, s.Brokers, OutputTopic)
	if err != nil {
		return nil, verify.Report{}, fmt.Errorf("scenario: read %s: %w", OutputTopic, err)
	}
	return events, verify.Analyze(events, expected), nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Agents returns the migration agents of the lab's hosts, by host name.
func (s *Scenario) Agents() map[string]*lab.RunningAgent { return s.agents }

// Close stops the agents and removes the lab.
func (s *Scenario) Close() error {
	if s.stopLoad != nil {
		s.stopLoad()
	}
	if s.watch != nil {
		s.watch.stop()
	}
	for _, a := range s.agents {
		_ = a.Close()
	}
	return s.Lab.Down(context.Background())
}

// groupWatch counts rebalances of a consumer group as the broker reports them, sampled every
// 100 ms. A classic group (DescribeGroups): transitions out of Stable (into
// PreparingRebalance or CompletingRebalance) after the group first became Stable. A KIP-848
// group (DescribeGroups answers GROUP_ID_NOT_FOUND for it; ConsumerGroupDescribe): bumps of
// the group epoch after the group first became Stable — each is a new target assignment, the
// protocol's rebalance (a member that joined, left for good or was fenced, a changed
// subscription), which no sample can miss since the epoch only grows.
type groupWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	n      int
	typ    string // "classic" or "consumer": the protocol the broker saw the group use
	once   sync.Once
}

func watchGroup(brokers []string, group string) *groupWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &groupWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		if err != nil {
			return
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		var c rebalanceCounter
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			qctx, qcancel := context.WithTimeout(ctx, time.Second)
			s, ok := describeGroupState(qctx, adm, group)
			qcancel()
			if !ok {
				continue
			}
			w.mu.Lock()
			w.n += c.observe(s)
			w.typ = s.typ
			w.mu.Unlock()
		}
	}()
	return w
}

// groupSample is one look at a group: its protocol ("classic" or "consumer"), its state as
// the protocol names it, and for KIP-848 groups the group epoch.
type groupSample struct {
	typ   string
	state string
	epoch int32
}

// describeGroupState describes group with the classic API, or when the broker says it holds no
// classic group of that name, with the KIP-848 one.
func describeGroupState(ctx context.Context, adm *kadm.Client, group string) (groupSample, bool) {
	gs, err := adm.DescribeGroups(ctx, group)
	if err == nil {
		if g, ok := gs[group]; ok && g.Err == nil && g.State != "Dead" {
			return groupSample{typ: "classic", state: g.State}, true
		}
	}
	cs, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		return groupSample{}, false
	}
	g, ok := cs[group]
	if !ok || g.Err != nil {
		return groupSample{}, false
	}
	return groupSample{typ: "consumer", state: g.State, epoch: g.Epoch}, true
}

// rebalanceCounter turns samples into rebalances (see groupWatch).
type rebalanceCounter struct {
	seenStable, stable bool
	epoch              int32
}

// observe returns the rebalances s shows since the previous sample.
func (c *rebalanceCounter) observe(s groupSample) int {
	n := 0
	now := strings.EqualFold(s.state, "Stable")
	if s.typ == "consumer" {
		if c.seenStable && s.epoch > c.epoch {
			n = int(s.epoch - c.epoch)
		}
		if now || c.seenStable {
			c.epoch = max(c.epoch, s.epoch)
		}
	} else if c.seenStable && c.stable && !now && s.state != "Empty" && s.state != "Dead" {
		n = 1
	}
	c.seenStable = c.seenStable || now
	c.stable = now
	return n
}

func (w *groupWatch) stop() int {
	w.once.Do(func() { w.cancel(); <-w.done })
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// protocol is the group protocol the broker last reported for the group ("" if never seen).
func (w *groupWatch) protocol() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.typ
}
