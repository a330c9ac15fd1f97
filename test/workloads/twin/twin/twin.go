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
	// StateMiB is the size of the history the twin holds. Default 16.
	StateMiB int
	// MaxDevices is how many devices the state holds. Default 1024.
	MaxDevices int
	// Window is how many readings the rolling statistics cover. Default 60.
	Window int
	// Transactional processes exactly-once (read_committed, one transaction per batch).
	// Without it, at-least-once.
	Transactional bool
	// RebuildFromChangelog writes every changed device's state to the compacted Changelog topic
	// in the batch's transaction, and at start rebuilds the state from it before consuming, as
	// a Kafka Streams application does.
	RebuildFromChangelog bool
	// SessionTimeout is the group session timeout. Default 45s.
	SessionTimeout time.Duration
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
	Rebuilt    int64  `json:"rebuilt_devices,omitempty"`
	State      string `json:"state"`
}

// Twin is a running digital twin.
type Twin struct {
	cfg   Config
	state *State // owned by the loop goroutine
	loop  *kafkahooks.Loop

	devices, anomalies, skipped, rebuilt atomic.Int64
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
	if cfg.MaxDevices == 0 {
		cfg.MaxDevices = 1024
	}
	if cfg.Window == 0 {
		cfg.Window = 60
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	st, err := NewState(cfg.StateMiB, cfg.MaxDevices, cfg.Window)
	if err != nil {
		return nil, err
	}
	t := &Twin{cfg: cfg, state: st}
	lc := kafkahooks.LoopConfig{
		Brokers:        cfg.Brokers,
		Group:          cfg.Group,
		Topics:         []string{cfg.In},
		InstanceID:     cfg.InstanceID,
		SessionTimeout: cfg.SessionTimeout,
		MaxPollRecords: cfg.MaxPollRecords,
		Dialer:         cfg.Dialer,
		Opts:           cfg.KgoOpts,
		Handle:         t.handle,
		BeforeConsume:  t.beforeConsume,
		OnAborted:      st.markAllDirty,
		Logf:           cfg.Logf,
	}
	if cfg.Transactional {
		lc.TransactionalID = TransactionalID(cfg.InstanceID)
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
	if err := t.loop.Run(ctx); err != nil {
		return fmt.Errorf("twin %s: %w", t.cfg.Instance, err)
	}
	return nil
}

// Loop is the twin's consume loop, its kafkahooks.Participant.
func (t *Twin) Loop() *kafkahooks.Loop { return t.loop }

// Stats returns the counters of the status line.
func (t *Twin) Stats() Stats {
	ls := t.loop.Stats()
	return Stats{
		Processed: ls.Processed, Devices: t.devices.Load(), StateMiB: t.cfg.StateMiB, TxnCommits: ls.Commits,
		Aborts: ls.Aborts, Anomalies: t.anomalies.Load(), Skipped: t.skipped.Load(), Rebuilt: t.rebuilt.Load(),
		State: string(t.loop.Status().State),
	}
}

func (t *Twin) handle(_ context.Context, b *kafkahooks.Batch) error {
	for _, r := range b.Records {
		var ev sensors.Event
		if err := json.Unmarshal(r.Value, &ev); err != nil || ev.Device == "" {
			t.skipped.Add(1)
			continue
		}
		res, err := t.state.Apply(ev.Device, ev.Seq, ev.TsNS, ev.Temp, ev.Humidity)
		if err != nil {
			return err
		}
		if res.Anomaly && !res.Replay {
			t.anomalies.Add(1)
		}
		v, err := json.Marshal(Output{
			Device: ev.Device, Seq: ev.Seq, InputPartition: r.Partition, InputOffset: r.Offset,
			Mean: res.Mean, Stddev: res.Stddev, Anomaly: res.Anomaly,
			ProcessedNS: time.Now().UnixNano(), Instance: t.cfg.Instance,
		})
		if err != nil {
			return fmt.Errorf("encode the output: %w", err)
		}
		b.Produce(&kgo.Record{Topic: t.cfg.Out, Key: []byte(ev.Device), Value: v})
	}
	t.devices.Store(int64(t.state.Devices()))
	if t.cfg.RebuildFromChangelog {
		for _, sn := range t.state.dirtySnapshots() {
			v, err := json.Marshal(sn)
			if err != nil {
				return fmt.Errorf("encode the changelog entry: %w", err)
			}
			b.Produce(&kgo.Record{Topic: t.cfg.Changelog, Key: []byte(sn.Device), Value: v})
		}
	}
	return nil
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
		return nil
	}
	compact := "compact"
	if err := sensors.EnsureTopic(ctx, cl, t.cfg.Changelog, parts, map[string]*string{"cleanup.policy": &compact}); err != nil {
		return err
	}
	start := time.Now()
	var opts []kgo.Opt
	if t.cfg.Dialer != nil {
		opts = append(opts, kgo.Dialer(t.cfg.Dialer))
	}
	rd, err := verify.NewReader(t.cfg.Brokers, opts...)
	if err != nil {
		return fmt.Errorf("changelog reader: %w", err)
	}
	defer rd.Close()
	latest := map[string]Snapshot{}
	var records int
	err = verify.ReadTopic(ctx, rd, t.cfg.Changelog, func(r *kgo.Record) {
		records++
		var sn Snapshot
		if json.Unmarshal(r.Value, &sn) == nil && sn.Device != "" {
			latest[sn.Device] = sn
		}
	})
	if err != nil {
		return fmt.Errorf("rebuild from the changelog: %w", err)
	}
	for _, sn := range latest {
		if err := t.state.restore(sn); err != nil {
			return err
		}
	}
	t.rebuilt.Store(int64(len(latest)))
	t.devices.Store(int64(t.state.Devices()))
	t.cfg.Logf("twin: rebuilt %d devices from %d changelog records in %s", len(latest), records, time.Since(start).Round(time.Millisecond))
	return nil
}
