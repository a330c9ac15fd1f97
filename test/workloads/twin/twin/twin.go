// Package twin is the core of the digital twin workload: a Kafka consumer that keeps, per
// sensor device, the latest reading, a history ring buffer and rolling statistics, and for every
// input event produces one output event (mean, standard deviation, anomaly flag) in the same
// transaction as the consumed offsets: exactly-once. It takes part in migrations through
// kafkahooks (its Loop is the Participant). Command twin wraps it; tests run it in process.
package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/sensors"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// Config describes a twin.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// Group is the consumer group. Default "ftwin-twin".
	Group string
	// InstanceID is the static member id; the transactional id is "twin-" + InstanceID.
	// Default "twin-1".
	InstanceID string
	// In, Out and Changelog are the topics. Defaults "sensors", "twin-state", "twin-changelog".
	In, Out, Changelog string
	// OutPartitions is the partition count of Out (and Changelog) if the twin creates them.
	// Default: as many as In has, or 3 if In does not exist yet.
	OutPartitions int32
	// StateMiB is the size of the history the twin holds (see State). Default 16.
	StateMiB int
	// Devices is the fleet: devices d-0 ... d-(Devices-1), each with an equal share of the
	// state. Default 256.
	Devices int
	// Window is how many readings the rolling statistics cover. Default 60.
	Window int
	// PrefillSeed seeds the history written into an empty state. Default 7 (the live load's
	// default seed is 1).
	PrefillSeed uint64
	// Transactional processes exactly-once (read_committed, one transaction per batch).
	// Without it, at-least-once.
	Transactional bool
	// RebuildFromChangelog writes every change of the state to the compacted Changelog topic
	// in the batch's transaction (the changed chunks and meta records, see State.Changes), and
	// at start rebuilds the whole state from it before consuming, as a Kafka Streams state
	// store does. An empty changelog is bootstrapped with the prefilled state.
	RebuildFromChangelog bool
	// Standby keeps a replica instead of processing (a Kafka Streams standby replica): it
	// consumes the changelog continuously, outside the group, until Takeover is closed; then
	// it consumes the changelog's tail and starts processing as the static member InstanceID.
	// Needs RebuildFromChangelog.
	Standby  bool
	Takeover <-chan struct{}
	// Digest computes the state's digest (State.Digest) after a rebuild or takeover and when
	// Run returns (Stats.Digest). (The loop computes it at every prepare and advance anyway,
	// for replay migrations.) The digest is incremental: the twin hashes the whole state once,
	// after its prefill (about 0.3 s per 512 MiB), while standing by, or after a rebuild a
	// share with every batch (or at once, with Digest); a digest then costs re-hashing the
	// chunks changed since, about a millisecond at most.
	Digest bool
	// Nondeterministic is a test knob: the twin processes non-deterministically (the processing
	// time goes into the state: a reading's slot holds the wall clock when it was applied, not
	// the sensor's timestamp), so that a copy that replays the same input ends with a different
	// state: for testing replay migration's digest check. Without it the state is a pure
	// function of the input records applied in order per device.
	Nondeterministic bool
	// NoReplay hides the twin's state digest from its hook (no capability replay): it then
	// moves only by stop-and-copy, like an application of hook protocol 1.
	NoReplay bool
	// SessionTimeout is the group session timeout. Default 45s.
	SessionTimeout time.Duration
	// GroupProtocol is the consumer-group protocol, "classic" (default) or "consumer"
	// (KIP-848); see kafkahooks.LoopConfig.GroupProtocol.
	GroupProtocol string
	// TransactionTimeout is the producer's transaction timeout. Default: kgo's (40s). A move
	// without the hooks (frozen with a transaction open) must finish within it, or the
	// coordinator aborts the transaction and the restored twin is fenced.
	TransactionTimeout time.Duration
	// MaxPollRecords bounds a batch (a transaction). Default 500.
	MaxPollRecords int
	// Instance names this process in the outputs. Default $FTWIN_HOST, or the host name.
	Instance string
	// Dialer opens connections to brokers. Default: TCP without MPTCP.
	Dialer func(ctx context.Context, network, host string) (net.Conn, error)
	// KgoOpts are added to the client's options.
	KgoOpts []kgo.Opt
	// Logf logs. Optional.
	Logf func(format string, args ...any)
}

// Output is the value of an output record: the event the verifier checks.
type Output = verify.Event

// Stats is the twin's status line.
type Stats struct {
	Processed  int64  `json:"processed"`
	Devices    int64  `json:"devices"`
	StateMiB   int    `json:"state_mib"`
	TxnCommits int64  `json:"txn_commits"`
	Aborts     int64  `json:"aborts,omitempty"`
	Anomalies  int64  `json:"anomalies,omitempty"`
	Skipped    int64  `json:"skipped,omitempty"`
	State      string `json:"state"`
	// RebuiltRecords and RebuiltBytes are the changelog records (and their key+value bytes)
	// the state was rebuilt from; RebuildMs how long it took.
	RebuiltRecords int64 `json:"rebuilt_records,omitempty"`
	RebuiltBytes   int64 `json:"rebuilt_bytes,omitempty"`
	RebuildMs      int64 `json:"rebuild_ms,omitempty"`
	// Standby: the instance keeps a replica. ReplicatedBytes counts the changelog bytes it
	// consumed (key+value), Lag the changelog records it has yet to read.
	Standby         bool  `json:"standby,omitempty"`
	ReplicatedBytes int64 `json:"replicated_bytes,omitempty"`
	Lag             int64 `json:"standby_lag,omitempty"`
	// TakeoverMs is how long the standby took from the takeover signal to its state being
	// current (the changelog's tail).
	TakeoverMs    int64 `json:"takeover_ms,omitempty"`
	TakeoverBytes int64 `json:"takeover_bytes,omitempty"`
	// Digest is the state's digest after the rebuild or takeover, or at the end of Run (with
	// Config.Digest).
	Digest string `json:"state_digest,omitempty"`
}

// Twin is a running digital twin.
type Twin struct {
	cfg   Config
	state *State // owned by the loop goroutine
	loop  *kafkahooks.Loop

	anomalies, skipped                         atomic.Int64
	rebuiltRecords, rebuiltBytes, rebuildMs    atomic.Int64
	standby                                    atomic.Bool
	replicated, lag, takeoverMs, takeoverBytes atomic.Int64
	digest                                     atomic.Value // string
	ready                                      bool         // the state is current (prefilled, rebuilt or taken over)
}

// New allocates the state and prepares the loop; Run runs it.
func New(cfg Config) (*Twin, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("twin: no brokers")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.Group, "ftwin-twin")
	def(&cfg.InstanceID, "twin-1")
	def(&cfg.In, "sensors")
	def(&cfg.Out, "twin-state")
	def(&cfg.Changelog, "twin-changelog")
	def(&cfg.Instance, os.Getenv("FTWIN_HOST"))
	if cfg.Instance == "" {
		cfg.Instance, _ = os.Hostname()
	}
	if cfg.StateMiB == 0 {
		cfg.StateMiB = 16
	}
	if cfg.Devices == 0 {
		cfg.Devices = 256
	}
	if cfg.PrefillSeed == 0 {
		cfg.PrefillSeed = 7
	}
	if cfg.Standby && !cfg.RebuildFromChangelog {
		return nil, errors.New("twin: a standby needs the changelog (RebuildFromChangelog)")
	}
	if cfg.Window == 0 {
		cfg.Window = 60
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	st, err := NewState(cfg.StateMiB, cfg.Devices, cfg.Window)
	if err != nil {
		return nil, err
	}
	t := &Twin{cfg: cfg, state: st}
	lc := kafkahooks.LoopConfig{
		Brokers:            cfg.Brokers,
		Group:              cfg.Group,
		Topics:             []string{cfg.In},
		InstanceID:         cfg.InstanceID,
		SessionTimeout:     cfg.SessionTimeout,
		GroupProtocol:      cfg.GroupProtocol,
		TransactionTimeout: cfg.TransactionTimeout,
		MaxPollRecords:     cfg.MaxPollRecords,
		Dialer:             cfg.Dialer,
		Opts:               cfg.KgoOpts,
		Handle:             t.handle,
		BeforeConsume:      t.beforeConsume,
		OnAborted:          st.Aborted,
		// The state is a function of the input records applied in order per device, and a
		// device's readings are in one partition (keyed by device): replayable.
		Digest: st.Digest,
		Logf:   cfg.Logf,
	}
	if cfg.Transactional {
		lc.TransactionalID = TransactionalID(cfg.InstanceID)
	}
	if cfg.NoReplay {
		lc.Digest = nil
	}
	if t.loop, err = kafkahooks.NewLoop(lc); err != nil {
		return nil, err
	}
	return t, nil
}

// TransactionalID is the transactional id of the twin with static member id instanceID.
func TransactionalID(instanceID string) string { return "twin-" + instanceID }

// Run runs the twin until ctx is done (a clean stop: the last batch is committed) or a fatal
// error, such as being fenced by a newer copy.
func (t *Twin) Run(ctx context.Context) error {
	if t.cfg.Standby {
		if err := t.replicate(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while standing by
			}
			return fmt.Errorf("twin %s: standby: %w", t.cfg.Instance, err)
		}
	}
	err := t.loop.Run(ctx)
	if t.cfg.Digest && t.ready {
		t.digest.Store(t.state.Digest())
	}
	if err != nil {
		return fmt.Errorf("twin %s: %w", t.cfg.Instance, err)
	}
	return nil
}

// Loop is the twin's consume loop, its kafkahooks.Participant.
func (t *Twin) Loop() *kafkahooks.Loop { return t.loop }

// Stats returns the counters of the status line.
func (t *Twin) Stats() Stats {
	ls := t.loop.Stats()
	st := Stats{
		Processed: ls.Processed, Devices: int64(t.cfg.Devices), StateMiB: t.cfg.StateMiB, TxnCommits: ls.Commits,
		Aborts: ls.Aborts, Anomalies: t.anomalies.Load(), Skipped: t.skipped.Load(),
		State:          string(t.loop.Status().State),
		RebuiltRecords: t.rebuiltRecords.Load(), RebuiltBytes: t.rebuiltBytes.Load(), RebuildMs: t.rebuildMs.Load(),
		Standby: t.standby.Load(), ReplicatedBytes: t.replicated.Load(), Lag: t.lag.Load(), TakeoverMs: t.takeoverMs.Load(), TakeoverBytes: t.takeoverBytes.Load(),
	}
	st.Digest, _ = t.digest.Load().(string)
	return st
}

func (t *Twin) handle(_ context.Context, b *kafkahooks.Batch) error {
	// The outputs of one batch share their processing time: they commit together, and the
	// verifier's pauses are those between batches.
	processed := time.Now().UnixNano()
	for _, r := range b.Records {
		var ev sensors.Event
		if err := json.Unmarshal(r.Value, &ev); err != nil || ev.Device == "" {
			t.skipped.Add(1)
			continue
		}
		res, err := t.apply(ev)
		if err != nil {
			return err
		}
		if res.Anomaly && !res.Replay {
			t.anomalies.Add(1)
		}
		v, err := json.Marshal(Output{
			Device: ev.Device, Seq: ev.Seq, InputPartition: r.Partition, InputOffset: r.Offset,
			Mean: res.Mean, Stddev: res.Stddev, Baseline: res.Baseline, Anomaly: res.Anomaly,
			SensorNS: ev.TsNS, ProcessedNS: processed, Instance: t.cfg.Instance,
		})
		if err != nil {
			return fmt.Errorf("encode the output: %w", err)
		}
		b.Produce(&kgo.Record{Topic: t.cfg.Out, Key: []byte(ev.Device), Value: v})
	}
	if t.cfg.RebuildFromChangelog {
		t.state.Changes(func(k, v []byte) {
			b.Produce(&kgo.Record{Topic: t.cfg.Changelog, Key: k, Value: v})
		})
	}
	// Keep the digest warm, so that the one at a prepare or advance (in the pause) costs
	// little: after a rebuild, hash a share of the state; and the chunks changed since hashed,
	// once there are many.
	t.state.WarmDigestSome(digestStep)
	return nil
}

// digestStep is how many chunks a batch hashes at most for the digest (1 MiB, about 0.5 ms).
const digestStep = 256

// apply applies a reading to the state. The slot's timestamp is the sensor's, or with
// Config.Nondeterministic the wall clock now.
func (t *Twin) apply(ev sensors.Event) (Result, error) {
	ts := ev.TsNS
	if t.cfg.Nondeterministic {
		ts = time.Now().UnixNano()
	}
	return t.state.Apply(ev.Device, ev.Seq, ts, ev.Temp, ev.Humidity)
}

// beforeConsume runs after the producer fenced any older copy: it creates the output topics
// and, in changelog mode, rebuilds the state.
func (t *Twin) beforeConsume(ctx context.Context, cl *kgo.Client) error {
	parts := t.cfg.OutPartitions
	if parts <= 0 {
		parts = 3
		td, err := kadm.NewClient(cl).ListTopics(ctx, t.cfg.In)
		if err == nil && td.Has(t.cfg.In) && len(td[t.cfg.In].Partitions) > 0 {
			parts = int32(len(td[t.cfg.In].Partitions))
		}
	}
	if err := sensors.EnsureTopic(ctx, cl, t.cfg.Out, parts, nil); err != nil {
		return err
	}
	if !t.cfg.RebuildFromChangelog {
		if !t.ready {
			t.prefill()
		}
		return nil
	}
	if err := t.ensureChangelog(ctx, cl, parts); err != nil {
		return err
	}
	if t.ready { // a standby that took over
		return nil
	}
	start := time.Now()
	rd, err := t.reader()
	if err != nil {
		return err
	}
	defer rd.Close()
	var records, bytes int64
	var applyErr error
	err = verify.ReadTopic(ctx, rd, t.cfg.Changelog, func(r *kgo.Record) {
		records++
		bytes += int64(len(r.Key) + len(r.Value))
		if err := t.state.ApplyChange(r.Key, r.Value); err != nil && applyErr == nil {
			applyErr = err
		}
	})
	if err == nil {
		err = applyErr
	}
	if err != nil {
		return fmt.Errorf("rebuild from the changelog %s: %w", t.cfg.Changelog, err)
	}
	if records == 0 {
		return t.bootstrap(ctx)
	}
	t.state.Finish()
	t.rebuiltRecords.Store(records)
	t.rebuiltBytes.Store(bytes)
	t.rebuildMs.Store(time.Since(start).Milliseconds())
	t.ready = true
	t.storeDigest()
	releaseGarbage()
	t.cfg.Logf("twin: rebuilt %d MiB of state from %d changelog records (%d MiB) in %s", t.state.Bytes()>>20, records, bytes>>20, time.Since(start).Round(time.Millisecond))
	return nil
}

// releaseGarbage returns the heap freed after a bootstrap or rebuild (records by the
// thousand) to the OS, so that the process holds its state and not that garbage, as it would
// some time later anyway.
func releaseGarbage() { debug.FreeOSMemory() }

func (t *Twin) storeDigest() {
	if t.cfg.Digest {
		t.digest.Store(t.state.Digest())
	}
}

func (t *Twin) prefill() {
	start := time.Now()
	t.state.Prefill(t.cfg.PrefillSeed, time.Second, start)
	t.ready = true
	t.cfg.Logf("twin: prefilled %d MiB of history (%d devices, %d readings each) in %s", t.state.Bytes()>>20, t.state.Devices(), t.state.RingLen(), time.Since(start).Round(time.Millisecond))
	// Hash it for the digest now, at the start, rather than at the first prepare.
	start = time.Now()
	t.state.WarmDigest()
	t.cfg.Logf("twin: hashed the state for its digest in %s", time.Since(start).Round(time.Millisecond))
}

// bootstrap prefills the state and writes all of it to the (empty) changelog, with a plain
// idempotent producer, before the first batch.
func (t *Twin) bootstrap(ctx context.Context) error {
	t.prefill()
	start := time.Now()
	opts := []kgo.Opt{kgo.SeedBrokers(t.cfg.Brokers...), kgo.DefaultProduceTopic(t.cfg.Changelog), kgo.MaxBufferedRecords(4096)}
	if t.cfg.Dialer != nil {
		opts = append(opts, kgo.Dialer(t.cfg.Dialer))
	}
	pr, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("bootstrap the changelog: create a producer: %w", err)
	}
	defer pr.Close()
	var first atomic.Value
	var n int64
	t.state.Everything(func(k, v []byte) {
		n++
		pr.Produce(ctx, &kgo.Record{Key: k, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				first.CompareAndSwap(nil, err)
			}
		})
	})
	if err := pr.Flush(ctx); err != nil {
		return fmt.Errorf("bootstrap the changelog %s: %w", t.cfg.Changelog, err)
	}
	if err, _ := first.Load().(error); err != nil {
		return fmt.Errorf("bootstrap the changelog %s: %w", t.cfg.Changelog, err)
	}
	t.storeDigest()
	releaseGarbage()
	t.cfg.Logf("twin: wrote the prefilled state to the changelog: %d records in %s", n, time.Since(start).Round(time.Millisecond))
	return nil
}

func (t *Twin) reader() (*kgo.Client, error) {
	var opts []kgo.Opt
	if t.cfg.Dialer != nil {
		opts = append(opts, kgo.Dialer(t.cfg.Dialer))
	}
	rd, err := verify.NewReader(t.cfg.Brokers, opts...)
	if err != nil {
		return nil, fmt.Errorf("changelog reader: %w", err)
	}
	return rd, nil
}

func (t *Twin) ensureChangelog(ctx context.Context, cl *kgo.Client, parts int32) error {
	compact := "compact"
	return sensors.EnsureTopic(ctx, cl, t.cfg.Changelog, parts, map[string]*string{"cleanup.policy": &compact})
}
