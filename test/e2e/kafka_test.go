package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

// kLabName is a lab name of this file's tests ("k" and six hex digits).
func kLabName() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "k" + hex.EncodeToString(b[:])
}

// requireApacheKafka skips unless Apache Kafka with its tools is assembled in the default home.
func requireApacheKafka(t *testing.T) {
	t.Helper()
	jars, _ := filepath.Glob(filepath.Join(broker.DefaultKafkaHome, "libs", "kafka-tools-[0-9]*.jar"))
	if len(jars) == 0 {
		t.Skipf("Apache Kafka %s with its tools is not assembled in %s: run `make install`", broker.KafkaVersion, broker.DefaultKafkaHome)
	}
}

// TestTwinGroupProtocols: the twin, a static member (group.instance.id twin-1),
// migrates cloud→fog→cloud under load on Apache Kafka, once in a classic group and once in a
// KIP-848 consumer-protocol group (franz-go's kgo.ServerSideBalancer): the broker reports the
// group under the protocol asked for (franz-go did not fall back to classic), the group never
// rebalances (classic: never leaves Stable; consumer: the group epoch never moves), every event
// is processed exactly once, and the broker's group-coordinator log (INFO) shows the static
// member's join under that protocol.
func TestTwinGroupProtocols(t *testing.T) {
	requireApacheKafka(t)
	for i, proto := range []string{kafkahooks.GroupProtocolClassic, kafkahooks.GroupProtocolConsumer} {
		t.Run(proto, func(t *testing.T) {
			s := startTwin(t, broker.Apache, []string{"10.240.42.0/24", "10.240.43.0/24"}[i], []string{"cloud", "fog"}, func(c *scenario.Config) {
				c.Lab.Name = kLabName()
				c.TwinArgs = []string{"-group-protocol", proto, "-kafka-log", "info"}
			})
			ctx := context.Background()
			for _, to := range []string{"fog", "cloud"} {
				time.Sleep(2 * time.Second)
				m := s.Migrate(ctx, to)
				if m.Err != nil {
					t.Fatalf("migrate %s→%s: %v", m.From, m.To, m.Err)
				}
				t.Logf("%s→%s: downtime %v, CRIU frozen %v, %d bytes", m.From, m.To, m.Downtime, m.Frozen, m.Bytes)
			}
			time.Sleep(2 * time.Second)
			res := finish(t, s)
			assertExactlyOnce(t, res)
			if res.GroupProtocol != proto {
				t.Errorf("the broker reports the twin's group under protocol %q, want %q", res.GroupProtocol, proto)
			}
			if res.Rebalances != 0 {
				t.Errorf("the group rebalanced %d times", res.Rebalances)
			}
			for _, m := range res.Migrations {
				t.Logf("migration %s→%s: %s, output downtime %.0f ms, stream gap %.0f ms, mover downtime %.0f ms, frozen %.0f ms",
					m.From, m.To, m.Result, m.DowntimeMs, m.StreamGapMs, m.MoverDowntimeMs, m.FrozenMs)
				if m.Result != "committed" || !m.BoundaryChecked {
					t.Errorf("migration %s→%s: %s, boundary checked %v", m.From, m.To, m.Result, m.BoundaryChecked)
				}
			}
			log, err := os.ReadFile(s.Lab.BrokerLogPath())
			if err != nil {
				t.Fatal(err)
			}
			var mine []string
			for _, l := range strings.Split(string(log), "\n") {
				if strings.Contains(l, scenario.Group) && strings.Contains(l, "GroupMetadataManager") {
					mine = append(mine, l)
				}
			}
			t.Logf("group coordinator on %s:\n%s", scenario.Group, strings.Join(mine, "\n"))
			want := map[string]*regexp.Regexp{
				kafkahooks.GroupProtocolClassic:  regexp.MustCompile(`(?i)static member .*twin-1|instance id twin-1`),
				kafkahooks.GroupProtocolConsumer: regexp.MustCompile(`Static member \S+ with instance id twin-1 joins the consumer group using the consumer protocol`),
			}[proto]
			if !want.MatchString(strings.Join(mine, "\n")) {
				t.Errorf("the broker log %s does not show the static member twin-1 joining (%s)", s.Lab.BrokerLogPath(), want)
			}
			if dir := os.Getenv("FTWIN_KEEP_LOGS"); dir != "" { // the whole logs, for a closer look
				for _, h := range s.Lab.Hosts {
					b, _ := os.ReadFile(h.LogPath(scenario.ContainerID))
					_ = os.WriteFile(filepath.Join(dir, proto+"-twin-"+h.Name+".log"), b, 0o644)
				}
				_ = os.WriteFile(filepath.Join(dir, proto+"-broker.log"), log, 0o644)
			}
			if t.Failed() {
				for _, h := range s.Lab.Hosts {
					b, _ := os.ReadFile(h.LogPath(scenario.ContainerID))
					var lines []string
					for _, l := range strings.Split(string(b), "\n") {
						// Not status lines, nor the client's lines about every transaction.
						if !strings.HasPrefix(l, "{") && !strings.Contains(l, "transact") && !strings.Contains(l, "flushing") {
							lines = append(lines, l)
						}
					}
					t.Logf("the twin's log on %s:\n%s", h.Name, tail(strings.Join(lines, "\n"), 12000))
				}
			}
		})
	}
}

// TestLabKafkaTools: `ftwin-migrate lab kafka` runs Kafka's own tools against a running lab's
// broker, Apache Kafka and the embedded kfake alike: a topic created and described, records
// produced and consumed by the console tools, the consumer group described with its offsets;
// `lab logs broker` shows the Apache broker's group coordinator at INFO.
func TestLabKafkaTools(t *testing.T) {
	requireLabTools(t)
	requireApacheKafka(t)
	cli := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
	for i, kind := range []broker.Kind{broker.Apache, broker.Embedded} {
		t.Run(string(kind), func(t *testing.T) {
			name, base := kLabName(), t.TempDir()
			run := func(stdin string, args ...string) string {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, cli, args...)
				cmd.Stdin = strings.NewReader(stdin)
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				if err := cmd.Run(); err != nil {
					t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
				}
				return out.String()
			}
			labArgs := []string{"--name", name, "--base-dir", base}
			run("", append([]string{"lab", "up", "--broker", string(kind), "--subnet", []string{"10.240.44.0/24", "10.240.45.0/24"}[i]}, labArgs...)...)
			t.Cleanup(func() { run("", append([]string{"lab", "down"}, labArgs...)...) })
			kafka := func(stdin string, args ...string) string {
				t.Helper()
				return run(stdin, append(append([]string{"lab", "kafka"}, labArgs...), args...)...)
			}
			if out := kafka("", "topics", "--create", "--topic", "k-tools", "--partitions", "2"); !strings.Contains(out, "Created topic k-tools") {
				t.Errorf("topics --create: %q", out)
			}
			if out := kafka("", "kafka-topics.sh", "--describe", "--topic", "k-tools"); !strings.Contains(out, "PartitionCount: 2") {
				t.Errorf("topics --describe: %q", out)
			}
			kafka("a\nb\nc\n", "console-producer", "--topic", "k-tools")
			// A static member, under KIP-848 on Apache Kafka. kfake's ConsumerGroupDescribe
			// names the assigned topics by id only, and the Java admin client then asks for
			// the offsets of topic "": on kfake the group is a classic one.
			proto := map[broker.Kind]string{broker.Apache: "consumer", broker.Embedded: "classic"}[kind]
			out := kafka("", "kafka-console-consumer", "--topic", "k-tools", "--from-beginning", "--max-messages", "3", "--group", "k-cg",
				"--command-property", "group.protocol="+proto, "--command-property", "group.instance.id=java-1")
			if got := strings.Fields(out); strings.Join(got, ",") != "a,b,c" {
				t.Errorf("console-consumer read %q, want a, b and c", out)
			}
			out = kafka("", "consumer-groups", "--describe", "--group", "k-cg")
			if !regexp.MustCompile(`k-cg\s+k-tools\s+\d\s+\d`).MatchString(out) {
				t.Errorf("consumer-groups --describe shows no committed offsets of k-cg:\n%s", out)
			}
			if out := kafka("", "groups", "--list"); !regexp.MustCompile(`(?i)k-cg\s+` + proto).MatchString(out) {
				t.Errorf("groups --list does not show k-cg as a %s group:\n%s", proto, out)
			}
			if kind == broker.Apache {
				log := run("", append(append([]string{"lab", "logs"}, labArgs...), "broker")...)
				if !strings.Contains(log, "Static member") || !strings.Contains(log, "instance id java-1") {
					t.Errorf("lab logs broker does not show the static member java-1 joining:\n%s", tail(log, 3000))
				}
			}
		})
	}
}
