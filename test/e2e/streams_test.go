package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/bench"
	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

var (
	streamsOnce    sync.Once
	streamsArchive string
	streamsErr     error
)

// streamsTwin builds the Kafka Streams twin (Maven, when `make java` has not) and its image
// archive, once per test binary.
func streamsTwin(t *testing.T) string {
	t.Helper()
	streamsOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			streamsErr = err
			return
		}
		app := filepath.Join(root, scenario.StreamsAppDir)
		if _, err := os.Stat(filepath.Join(app, "streams-twin.jar")); err != nil {
			out, err := exec.Command("mvn", "-B", "-q", "-f", filepath.Join(root, "twins/streams/pom.xml"), "-DskipTests", "install").CombinedOutput()
			if err != nil {
				streamsErr = err
				t.Logf("mvn: %s", out)
				return
			}
		}
		dir, err := os.MkdirTemp("", "ftwin-streams-image-")
		if err != nil {
			streamsErr = err
			return
		}
		streamsArchive = filepath.Join(dir, "streams-twin.tar")
		streamsErr = scenario.BuildStreamsTwin(context.Background(), app, streamsArchive)
	})
	if streamsErr != nil {
		t.Fatalf("build the Kafka Streams twin's image: %v", streamsErr)
	}
	return streamsArchive
}

// jvmStatus is the last status line of the twin on host (its RSS, threads, heap).
func jvmStatus(l *lab.Lab, host string) string {
	h, err := l.Host(host)
	if err != nil {
		return err.Error()
	}
	b, _ := os.ReadFile(h.LogPath(scenario.ContainerID))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") && strings.Contains(lines[i], "rss_kib") {
			return lines[i]
		}
	}
	return "(no status line)"
}

func startStreamsTwin(t *testing.T, subnet string, args []string) *scenario.Scenario {
	t.Helper()
	return startStreamsScenario(t, subnet, func(c *scenario.Config) { c.TwinArgs = args })
}

// startStreamsScenario starts the Kafka Streams twin on cloud (30 devices, 200 readings/s,
// Apache Kafka) with edit's changes to the scenario's configuration.
func startStreamsScenario(t *testing.T, subnet string, edit func(*scenario.Config)) *scenario.Scenario {
	t.Helper()
	requireLabTools(t)
	if _, err := os.Stat(filepath.Join(broker.DefaultKafkaHome, "libs")); err != nil {
		t.Fatalf("Apache Kafka is not assembled (%v): `make install`", err)
	}
	cfg := scenario.Config{
		Lab:              lab.Config{Name: "s" + labName(t)[1:], BaseDir: t.TempDir(), Hosts: []string{"cloud", "fog"}, Subnet: subnet, Broker: broker.Apache},
		TwinImageArchive: streamsTwin(t), Rate: 200, Devices: 30,
	}
	edit(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := scenario.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the Kafka Streams twin: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range s.Lab.Hosts {
				for _, id := range []string{scenario.ContainerID, scenario.StandbyID} {
					if b, err := os.ReadFile(h.LogPath(id)); err == nil {
						t.Logf("log of %s on %s (tail):\n%s", id, h.Name, tail(string(b), 6000))
					}
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if left := lab.Find(cfg.Lab.BaseDir, cfg.Lab.Name); !left.Empty() {
			t.Errorf("left behind: %s", left)
		}
	})
	return s
}

// TestStreamsTwinMigrates: the Kafka Streams twin (DSL aggregate into a changelogged store,
// exactly_once_v2, static member, ftwin-hook) migrates cloud→fog→cloud under load on Apache
// Kafka by stop-and-copy, with the default commit interval (100 ms) and a long one (5 s):
// every reading is output exactly once, the group never rebalances, the hook's boundary is
// checked against the broker, and no live copy is fenced (the logs of the copies show no
// fencing).
func TestStreamsTwinMigrates(t *testing.T) {
	for i, tc := range []struct {
		name string
		args []string
	}{
		{"commit-100ms", nil},
		{"commit-5s", []string{"-commit-interval-ms", "5000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startStreamsTwin(t, []string{"10.240.30.0/24", "10.240.31.0/24"}[i], tc.args)
			ctx := context.Background()
			for _, to := range []string{"fog", "cloud"} {
				time.Sleep(3 * time.Second)
				m := s.Migrate(ctx, to)
				if m.Err != nil {
					t.Fatalf("migrate %s→%s: %v", m.From, m.To, m.Err)
				}
				r := m.Report
				if r.Boundary == nil {
					t.Fatalf("move %s→%s took no boundary (no hook?): warnings %q", m.From, m.To, r.Warnings)
				}
				t.Logf("move %s→%s: downtime %v, CRIU frozen %v, restore %v, sent %d B (wire %d B), boundary %v, prepare capabilities %v, warnings %q",
					m.From, m.To, m.Downtime, m.Frozen, r.RestoreTime, m.Bytes, m.WireBytes, r.Boundary.Offsets, r.Boundary.Capabilities, r.Warnings)
				var phases []string
				for _, p := range r.Phases {
					phases = append(phases, fmt.Sprintf("%s %v", p.Name, p.Duration.Round(time.Millisecond)))
				}
				t.Logf("  phases: %s; JVM before the move: %s", strings.Join(phases, ", "), jvmStatus(s.Lab, m.From))
				if b, err := os.ReadFile(r.TargetLog); err == nil {
					for _, l := range strings.Split(string(b), "\n") {
						if strings.Contains(l, "ftwin-hook:") {
							t.Logf("  target: %s", l)
						}
					}
				}
				if r.CRIU != nil {
					t.Logf("  CRIU: pages written %d, scanned %d, memdump %d us, frozen %d us", r.CRIU.GetPagesWritten(), r.CRIU.GetPagesScanned(), r.CRIU.GetMemdumpTime(), r.CRIU.GetFrozenTime())
				}
				if err := s.WaitProcessing(ctx, 60*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(2 * time.Second)
			res := finish(t, s)
			assertExactlyOnce(t, res)
			if res.Rebalances != 0 {
				t.Errorf("the group rebalanced %d times", res.Rebalances)
			}
			for _, m := range res.Migrations {
				t.Logf("migration %s→%s: %s, stream gap %.0f ms, downtime %.0f ms, frozen %.0f ms", m.From, m.To, m.Result, m.StreamGapMs, m.DowntimeMs, m.FrozenMs)
				if m.Result != "committed" || !m.BoundaryChecked {
					t.Errorf("migration %s→%s: %s, boundary checked %v", m.From, m.To, m.Result, m.BoundaryChecked)
				}
			}
			for _, h := range s.Lab.Hosts {
				b, _ := os.ReadFile(h.LogPath(scenario.ContainerID))
				for _, bad := range []string{"ProducerFencedException", "InvalidProducerEpochException", "TaskMigratedException", "FENCED_INSTANCE_ID", "RUNNING -> REBALANCING"} {
					if strings.Contains(string(b), bad) {
						t.Errorf("the twin's log on %s says %s: a live copy was fenced or rebalanced", h.Name, bad)
					}
				}
			}
		})
	}
}

// refuseResume is the twin's own hook, except that the migrator "fails" at the resume without
// sending it, after the copy has sat restored (held) for a while: the copy never ran.
type refuseResume struct {
	*migrate.SocketHook
	wait time.Duration
}

func (h refuseResume) Resume(ctx context.Context, _ http.RoundTripper) (kafkahooks.Offsets, error) {
	time.Sleep(h.wait)
	return nil, &kafkahooks.Error{Op: "resume", StatusCode: http.StatusConflict, Message: "test: not resumed"}
}

// TestStreamsTwinHeldCopyRollsBack: the Streams twin's copy is restored on fog and held there
// (capability hold) for 5 s, then the migration rolls back before any resume: the copy did
// nothing all that time (its status lines say prepared, processed unchanged), the source is
// thawed and aborted (its producer re-initialised) and carries on, exactly once, without a
// rebalance.
func TestStreamsTwinHeldCopyRollsBack(t *testing.T) {
	s := startStreamsTwin(t, "10.240.32.0/24", nil)
	ctx := context.Background()
	time.Sleep(3 * time.Second)
	cloud, fog := s.Lab.Hosts[0], s.Lab.Hosts[1]
	client, err := cloud.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lctx := lab.Context(ctx)
	c, err := client.LoadContainer(lctx, scenario.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(lctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := migrate.FindSocketHook(task.Pid(), "")
	if err != nil || sh == nil {
		t.Fatalf("the twin's hook: %v", err)
	}
	m := s.MigrateWith(ctx, "fog", func(o *migrate.Options) { o.Hook = refuseResume{sh, 5 * time.Second} })
	if m.Err == nil || m.Report.Result != migrate.RolledBack {
		t.Fatalf("migration: %v (result %s), want a clean rollback", m.Err, m.Report.Result)
	}
	if s.At() != "cloud" {
		t.Fatalf("after the rollback the twin is on %s", s.At())
	}
	held := m.Report.Boundary.RecordsProcessed
	b, _ := os.ReadFile(fog.LogPath(scenario.ContainerID))
	lines := 0
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		lines++
		if !strings.Contains(l, `"state":"prepared"`) || !strings.Contains(l, fmt.Sprintf(`"processed":%d,`, held)) {
			t.Errorf("the held copy on fog ran: %s (boundary at %d processed)", l, held)
		}
	}
	if lines < 3 {
		t.Errorf("the held copy printed %d status lines in 5 s; want it alive (and held) throughout:\n%s", lines, tail(string(b), 3000))
	}
	if err := s.WaitProcessing(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	res := finish(t, s)
	assertExactlyOnce(t, res)
	if res.Rebalances != 0 {
		t.Errorf("the group rebalanced %d times", res.Rebalances)
	}
}

// TestStreamsBaselines: the benchmark's two Kafka-native ways for the Streams twin
// are real: a restart on fog restores the store from the changelog, and a standby replica on
// fog (a second member holding only standby tasks, PinnedTaskAssignor) takes every task over
// when the source leaves. Both carry on exactly once, and with the state: every device's first
// output after the move has the rolling mean of the readings before it (a store rebuilt
// empty would output a mean of 0).
//
// (Short names: the lab's sockets live under the test's temporary directory, whose name is the
// test's, and a Unix socket's path has at most 104 bytes.)
func TestStreamsBaselines(t *testing.T) {
	for i, method := range []string{scenario.MethodRestart, scenario.MethodStandby} {
		t.Run(strings.TrimPrefix(method, "kafka-"), func(t *testing.T) {
			s := startStreamsScenario(t, []string{"10.240.33.0/24", "10.240.34.0/24"}[i], func(c *scenario.Config) {
				c.TwinArgs = bench.StreamsTwinArgs()
				c.Standby = method == scenario.MethodStandby
			})
			ctx := context.Background()
			if method == scenario.MethodStandby {
				if err := s.WaitStandby(ctx, 0, 2000, 3*time.Minute); err != nil {
					t.Fatal(err)
				}
				st, _ := scenario.LastStatus(s.Lab.Hosts[1].LogPath(scenario.StandbyID))
				t.Logf("standby before the move: %d standby tasks, %d active, lag %d", st.StandbyTasks, st.ActiveTasks, st.Lag)
			}
			time.Sleep(3 * time.Second)
			var m scenario.Migration
			if method == scenario.MethodRestart {
				m = s.Restart(ctx, "fog")
			} else {
				m = s.MoveStandby(ctx)
			}
			if m.Err != nil {
				t.Fatalf("%s: %v", method, m.Err)
			}
			if err := s.WaitProcessing(ctx, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second)
			res := finish(t, s)
			assertExactlyOnce(t, res)
			mr := res.Migrations[0]
			t.Logf("%s: stream gap %.0f ms, restored %d records in %.0f ms, rebalances %d", method, mr.StreamGapMs, mr.RestoredRecords, mr.RestoreMs, res.Rebalances)
			if method == scenario.MethodRestart && mr.RestoredRecords == 0 {
				t.Errorf("the restarted twin restored nothing from the changelog")
			}
			before, after := map[string]bool{}, map[string]bool{}
			for _, e := range res.Events {
				switch at := time.Unix(0, e.ProcessedNS); {
				case at.Before(m.Start):
					before[e.Device] = true
				case !after[e.Device] && before[e.Device]:
					after[e.Device] = true
					if e.Mean == 0 {
						t.Errorf("%s: device %s's first output after the move (seq %d) has mean 0: its state did not come back", method, e.Device, e.Seq)
					}
				}
			}
			if len(after) == 0 {
				t.Fatalf("no device had outputs on both sides of the move")
			}
		})
	}
}
