package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

// groupMembers returns the member ids of the twin's group as the broker has them.
func groupMembers(ctx context.Context, t *testing.T, brokers []string) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	gs, err := kadm.NewClient(cl).DescribeGroups(ctx, scenario.Group)
	if err != nil {
		return "error: " + err.Error()
	}
	var ids []string
	for _, m := range gs[scenario.Group].Members {
		ids = append(ids, m.MemberID)
	}
	return strings.Join(ids, ",")
}

// TestReplayMigration moves the twin cloud → fog → cloud by replay under continuous load, on
// Apache Kafka and kfake: exactly once, no rebalance, equal digests at each cutover, and,
// watched on the broker through the catch-up, the source's group member never changes before
// the cutover (the shadow's old client says nothing to the broker, its replay is outside the
// group).
func TestReplayMigration(t *testing.T) {
	for i, kind := range brokerKinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			subnet := []string{"10.231.70.0/24", "10.231.71.0/24"}[i]
			s := startTwin(t, kind, subnet, []string{"cloud", "fog"}, nil)
			ctx := context.Background()
			type window struct {
				from       string
				start, end time.Time
			}
			var catchUps []window
			for _, to := range []string{"fog", "cloud"} {
				before := groupMembers(ctx, t, s.Brokers)
				var mu sync.Mutex
				var changed []string
				polls := 0
				m := s.MigrateReplay(ctx, to, func(o *migrate.Options) {
					o.CatchUpProgress = func(kafkahooks.Status) {
						mu.Lock()
						defer mu.Unlock()
						polls++
						if got := groupMembers(ctx, t, s.Brokers); got != before {
							changed = append(changed, got)
						}
					}
				})
				if m.Err != nil {
					t.Fatalf("replay migration to %s: %v", to, m.Err)
				}
				r := m.Report
				t.Logf("to %s: snapshot pause %v, catch-up %v (%d replayed), cutover pause %v, digests %s / %s",
					to, r.Replay.SnapshotPause, r.Replay.CatchUp, r.Replay.Replayed, r.Replay.CutoverPause, r.Replay.SourceDigest, r.Replay.CopyDigest)
				if r.Result != migrate.Committed || r.Mode != "replay" || !r.Replay.TookOver || r.Replay.SourceDigest == "" || r.Replay.SourceDigest != r.Replay.CopyDigest {
					t.Errorf("report: result %q, mode %q, replay %+v", r.Result, r.Mode, r.Replay)
				}
				var w window
				for _, p := range r.Phases {
					switch p.Name {
					case migrate.Snapshot:
						w.start = r.Started.Add(p.Start + p.Duration)
					case migrate.Cutover:
						w.end = r.Started.Add(p.Start)
					}
				}
				w.from = m.From
				catchUps = append(catchUps, w)
				if polls == 0 || len(changed) > 0 {
					t.Errorf("during the catch-up (%d polls) the group's members changed from %s to %v", polls, before, changed)
				}
				if err := s.WaitProcessing(ctx, time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			res := finish(t, s)
			assertExactlyOnce(t, res)
			if res.Rebalances != 0 {
				t.Errorf("%d rebalances", res.Rebalances)
			}
			// From each snapshot to its cutover (transfer, shadow restore, catch-up) the source kept
			// committing outputs (read_committed sees
			// them: nothing fenced it or aborted its transactions); the shadow produces none by
			// construction (its batches drop what they produce).
			for _, w := range catchUps {
				n := 0
				for _, ev := range res.Events {
					if at := time.Unix(0, ev.ProcessedNS); !at.Before(w.start) && at.Before(w.end) {
						n++
					}
				}
				t.Logf("snapshot to cutover from %s %s..%s: %d outputs committed by the source", w.from, w.start.Format("15:04:05.000"), w.end.Format("15:04:05.000"), n)
				if n == 0 {
					t.Errorf("no output committed between the snapshot and the cutover from %s: the source did not work on", w.from)
				}
			}
		})
	}
}

// TestReplayRollbacks fails replay migrations where the lab can make them fail, on Apache
// Kafka (kfake if it is not assembled): the shadow does not catch up in time; the states'
// digests differ (a non-deterministic twin); the source dies during the catch-up (the shadow
// takes over from the log). Each ends with exactly one working twin, and nothing lost or
// duplicated over all of them.
func TestReplayRollbacks(t *testing.T) {
	kind := brokerKinds(t)[0]
	s := startTwin(t, kind, "10.231.72.0/24", []string{"cloud", "fog"}, func(c *scenario.Config) {
		c.TwinArgs = append(c.TwinArgs, "-nondeterministic")
	})
	ctx := context.Background()

	// The catch-up cannot finish: its first status is read past a 5 ms deadline (the progress
	// callback takes longer), and a status read after the deadline does not count.
	m := s.MigrateReplay(ctx, "fog", func(o *migrate.Options) {
		o.MaxLag, o.CatchUpTimeout = -1, 5*time.Millisecond
		o.CatchUpProgress = func(kafkahooks.Status) { time.Sleep(20 * time.Millisecond) }
	})
	if m.Err == nil || m.Report.Result != migrate.RolledBack || !strings.Contains(m.Err.Error(), "did not catch up") || s.At() != "cloud" {
		t.Fatalf("catch-up timeout: %v (result %q), twin at %s", m.Err, m.Report.Result, s.At())
	}
	if err := s.WaitProcessing(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	// The twin puts its processing time into its state: the shadow's replay cannot match.
	m = s.MigrateReplay(ctx, "fog")
	if m.Err == nil || m.Report.Result != migrate.RolledBack || !strings.Contains(m.Err.Error(), "not deterministic") || s.At() != "cloud" {
		t.Fatalf("digest mismatch: %v (result %q), twin at %s", m.Err, m.Report.Result, s.At())
	}
	if r := m.Report.Replay; r.SourceDigest == "" || r.SourceDigest == r.CopyDigest || r.TookOver {
		t.Errorf("digest mismatch: replay %+v", r)
	}
	if err := s.WaitProcessing(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	// The source dies while the shadow catches up: the shadow takes over from the log.
	var once sync.Once
	m = s.MigrateReplay(ctx, "fog", func(o *migrate.Options) {
		o.MaxLag = -1
		o.CatchUpProgress = func(kafkahooks.Status) {
			once.Do(func() {
				if err := s.KillTwin(ctx); err != nil {
					t.Errorf("kill the source: %v", err)
				}
			})
		}
	})
	if m.Err != nil || !m.Report.Replay.SourceDied || s.At() != "fog" {
		t.Fatalf("source killed during the catch-up: %v, replay %+v, twin at %s", m.Err, m.Report.Replay, s.At())
	}
	if err := s.WaitProcessing(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	res := finish(t, s)
	assertExactlyOnce(t, res)
}

// TestReplayRefusedWithoutCapability: a twin whose hook does not offer replay is refused
// --mode replay in the preflight, with the reason and the way out, untouched; it then moves by
// stop-and-copy, exactly once.
func TestReplayRefusedWithoutCapability(t *testing.T) {
	s := startTwin(t, broker.Embedded, "10.231.73.0/24", []string{"cloud", "fog"}, func(c *scenario.Config) {
		c.TwinArgs = append(c.TwinArgs, "-no-replay")
	})
	ctx := context.Background()
	m := s.MigrateReplay(ctx, "fog")
	if m.Err == nil || !strings.Contains(m.Err.Error(), "cannot be migrated by replay") || !strings.Contains(m.Err.Error(), "--mode stop-and-copy") {
		t.Fatalf("replay of a twin without the capability: %v, want a refusal naming stop-and-copy", m.Err)
	}
	if p := m.Report.Phases; len(p) != 2 || p[0].Name != migrate.Preflight || p[0].Error == "" {
		t.Errorf("phases %+v: want only the preflight, failed, and the rollback", p)
	}
	if m := s.Migrate(ctx, "fog"); m.Err != nil {
		t.Fatalf("stop-and-copy: %v", m.Err)
	}
	if err := s.WaitProcessing(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	assertExactlyOnce(t, finish(t, s))
}

// TestBrokerRestartDuringMigration restarts the Apache Kafka broker in the middle of a
// migration, once by stop-and-copy (while the frozen source's image crosses the link) and once
// by replay (while the shadow catches up): both commit, and the twin stays exactly once.
func TestBrokerRestartDuringMigration(t *testing.T) {
	if brokerKinds(t)[0] != broker.Apache {
		t.Fatal("a broker restart needs Apache Kafka: run `make install`")
	}
	s := startTwin(t, broker.Apache, "10.231.74.0/24", []string{"cloud", "fog"}, nil)
	ctx := context.Background()
	restart := func() {
		start := time.Now()
		if err := s.Lab.RestartBroker(ctx); err != nil {
			t.Errorf("restart the broker: %v", err)
		}
		t.Logf("broker restarted in %v", time.Since(start).Round(time.Millisecond))
	}
	m := s.MigrateWith(ctx, "fog", onRequest("/criu-image", func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
		return next.RoundTrip(midBody(r, restart))
	}))
	if m.Err != nil {
		t.Fatalf("stop-and-copy with a broker restart during the transfer: %v", m.Err)
	}
	if err := s.WaitProcessing(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	m = s.MigrateReplay(ctx, "cloud", func(o *migrate.Options) {
		o.MaxLag = -1
		o.CatchUpProgress = func(kafkahooks.Status) { once.Do(restart) }
	})
	if m.Err != nil {
		t.Fatalf("replay with a broker restart during the catch-up: %v", m.Err)
	}
	if err := s.WaitProcessing(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	assertExactlyOnce(t, finish(t, s))
}
