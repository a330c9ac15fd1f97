package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

const twinPkg = "github.com/ftwin-migrate/ftwin-migrate/test/workloads/twin"

// brokerKinds are the Kafkas the twin tests run against: real Apache Kafka is the proof,
// kfake the fast default.
func brokerKinds(t *testing.T) []broker.Kind {
	kinds := []broker.Kind{broker.Embedded}
	if _, err := os.Stat(filepath.Join(broker.DefaultKafkaHome, "libs")); err == nil {
		kinds = append([]broker.Kind{broker.Apache}, kinds...)
	} else {
		t.Logf("Apache Kafka not assembled (%v): kfake only; `make install` assembles it", err)
	}
	return kinds
}

func startTwin(t *testing.T, kind broker.Kind, subnet string, hosts []string, edit func(*scenario.Config)) *scenario.Scenario {
	t.Helper()
	requireLabTools(t)
	cfg := scenario.Config{
		Lab:        lab.Config{Name: labName(t), BaseDir: t.TempDir(), Hosts: hosts, Subnet: subnet, Broker: kind},
		TwinBinary: testbin.Build(t, twinPkg), StateMiB: 32, Rate: 300, Devices: 30,
	}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := scenario.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the twin scenario on %s: %v", kind, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if left := lab.Find(cfg.Lab.BaseDir, cfg.Lab.Name); !left.Empty() {
			t.Errorf("left behind: %s", left)
		}
	})
	return s
}

func finish(t *testing.T, s *scenario.Scenario) scenario.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := s.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("events in %d out %d, lost %d dup %d, rebalances %d; migrations %+v", res.EventsIn, res.EventsOut, res.Lost, res.Duplicated, res.Rebalances, res.Migrations)
	return res
}

func assertExactlyOnce(t *testing.T, res scenario.Result) {
	t.Helper()
	if res.EventsIn == 0 || res.EventsOut != res.EventsIn || res.Lost != 0 || res.Duplicated != 0 {
		t.Errorf("exactly-once broken: in %d, out %d, lost %d, duplicated %d (worst devices %v)",
			res.EventsIn, res.EventsOut, res.Lost, res.Duplicated, res.Verify.Worst(5))
	}
}

// TestTwinMigratesExactlyOnce: the twin under continuous load migrates A→B→C→A; every event
// is processed exactly once and the group never rebalances.
func TestTwinMigratesExactlyOnce(t *testing.T) {
	for i, kind := range brokerKinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			s := startTwin(t, kind, []string{"10.231.60.0/24", "10.231.61.0/24"}[i], []string{"cloud", "fog1", "fog2"}, nil)
			ctx := context.Background()
			for _, to := range []string{"fog1", "fog2", "cloud"} {
				time.Sleep(time.Second)
				if m := s.Migrate(ctx, to); m.Err != nil {
					t.Fatalf("migrate %s→%s: %v", m.From, m.To, m.Err)
				}
			}
			time.Sleep(time.Second)
			res := finish(t, s)
			assertExactlyOnce(t, res)
			if res.Rebalances != 0 {
				t.Errorf("the group rebalanced %d times", res.Rebalances)
			}
			for _, m := range res.Migrations {
				if m.Result != "committed" || !m.BoundaryChecked {
					t.Errorf("migration %s→%s: %s, boundary checked %v", m.From, m.To, m.Result, m.BoundaryChecked)
				}
			}
		})
	}
}

// TestTwinRollbackMidway: a migration that fails at restore resumes the source at its boundary
// with nothing lost or duplicated.
func TestTwinRollbackMidway(t *testing.T) {
	kind := brokerKinds(t)[0]
	s := startTwin(t, kind, "10.231.62.0/24", []string{"cloud", "fog"}, func(c *scenario.Config) {
		c.AgentEdit = map[string]func(*agent.Config){"fog": failRestore}
	})
	time.Sleep(time.Second)
	m := s.Migrate(context.Background(), "fog")
	if m.Err == nil {
		t.Fatal("the migration to a failing target succeeded")
	}
	if s.At() != "cloud" {
		t.Fatalf("after the rollback the twin is on %s", s.At())
	}
	time.Sleep(2 * time.Second)
	res := finish(t, s)
	assertExactlyOnce(t, res)
	if res.Rebalances != 0 {
		t.Errorf("the group rebalanced %d times", res.Rebalances)
	}
}

// TestHooklessConsumerMigrates: a consumer without hooks is frozen as it is, migrates and keeps
// consuming; the report says no boundary was taken.
func TestHooklessConsumerMigrates(t *testing.T) {
	s := startTwin(t, broker.Embedded, "10.231.63.0/24", []string{"cloud", "fog"}, func(c *scenario.Config) {
		c.TwinArgs = []string{"-hook-socket", ""}
	})
	time.Sleep(time.Second)
	m := s.Migrate(context.Background(), "fog")
	if m.Err != nil {
		t.Fatal(m.Err)
	}
	if m.Report.Boundary != nil || m.Report.BoundaryCheck != nil {
		t.Errorf("a hookless migration reports a boundary: %+v", m.Report.Boundary)
	}
	time.Sleep(2 * time.Second)
	res := finish(t, s)
	if res.EventsOut < res.EventsIn {
		t.Errorf("after the migration the consumer did not keep consuming: %d of %d events processed", res.EventsOut, res.EventsIn)
	}
}

// TestTwinZombieFenced: the source is frozen mid-stream and checkpointed; its copy takes over on
// another host and commits; then the source is thawed — a zombie, as a crashed migrator could
// leave behind. Kafka fences it (its producer epoch is stale: the copy's transactions bumped
// it), none of its output is visible to read_committed readers, and every event is still
// processed exactly once.
func TestTwinZombieFenced(t *testing.T) {
	kind := brokerKinds(t)[0]
	s := startTwin(t, kind, "10.231.64.0/24", []string{"cloud", "fog"}, func(c *scenario.Config) {
		c.TwinArgs = []string{"-hook-socket", ""} // frozen as it is, mid-stream
	})
	cloud, fog := s.Lab.Hosts[0], s.Lab.Hosts[1]
	ctx := lab.Context(context.Background())
	time.Sleep(time.Second)

	src, err := cloud.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := fog.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	c, err := src.LoadContainer(ctx, scenario.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	zombie, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := zombie.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoint.Checkpoint(ctx, src, scenario.ContainerID, checkpoint.WithTCPEstablished())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transfer.CopyImage(ctx, src, dst, ck.Ref); err != nil {
		t.Fatal(err)
	}
	tcp, err := restore.WithTCP(restore.TCPClose, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Restore(ctx, dst, scenario.ContainerID, ck.Ref, restore.WithLogFile(fog.LogPath(scenario.ContainerID)),
		restore.WithCgroupsPath(fog.CgroupsPath(lab.Namespace, scenario.ContainerID)), tcp); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the copy reconnects and commits transactions
	zlogBefore, _ := os.ReadFile(cloud.LogPath(scenario.ContainerID))
	if err := zombie.Resume(ctx); err != nil { // the zombie wakes up
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)

	out := finish(t, s)
	assertExactlyOnce(t, out)
	zlog, _ := os.ReadFile(cloud.LogPath(scenario.ContainerID))
	woke := strings.ToLower(string(zlog[len(zlogBefore):]))
	if !strings.Contains(woke, "epoch") && !strings.Contains(woke, "fenced") {
		t.Errorf("the zombie's log does not say Kafka fenced it:\n%s", tail(woke, 2000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestTwinOfflineCheckpointBoundary: `ftwin-migrate checkpoint -o` quiesces a twin through its
// hook, records the boundary with the checkpoint (`inspect` shows it) and lets the twin carry
// on, still exactly once.
func TestTwinOfflineCheckpointBoundary(t *testing.T) {
	s := startTwin(t, broker.Embedded, "10.231.65.0/24", []string{"cloud", "fog"}, nil)
	cli := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
	time.Sleep(time.Second)
	dir := filepath.Join(t.TempDir(), "ckpt")
	out, err := exec.Command(cli, "--address", s.Lab.Hosts[0].Address(), "--namespace", lab.Namespace, "checkpoint", "-o", dir, scenario.ContainerID).CombinedOutput()
	if err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, out)
	}
	out, err = exec.Command(cli, "inspect", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"group":"ftwin-twin"`) || !strings.Contains(string(out), `"offsets":{"sensors"`) {
		t.Fatalf("inspect does not show the boundary: %v\n%s", err, out)
	}
	time.Sleep(time.Second)
	assertExactlyOnce(t, finish(t, s))
}
