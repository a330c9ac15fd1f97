package lab_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
)

// labTools are what a lab needs on PATH.
var labTools = []string{"containerd", "runc", "ip", "tc"}

func uniqueName() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "l" + hex.EncodeToString(b[:])
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		cfg  lab.Config
		want string
	}{
		{lab.Config{Name: "Bad_Name"}, `name "Bad_Name"`},
		{lab.Config{Name: "toolongname"}, `name "toolongname"`},
		{lab.Config{Hosts: []string{"a", "a"}}, `"a" given twice`},
		{lab.Config{Hosts: []string{"UPPER"}}, `host name "UPPER"`},
		{lab.Config{Subnet: "10.0.0.0/16"}, `subnet "10.0.0.0/16"`},
		{lab.Config{UplinkMbit: -1}, "uplink rate -1"},
	}
	for _, c := range cases {
		c.cfg.BaseDir = t.TempDir()
		_, err := lab.Up(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Up(%+v) = %v, want error containing %q", c.cfg, err, c.want)
		}
	}
}

// TestKafkaFromHosts: each host reaches the lab's broker from its own network namespace, for
// the embedded kfake and for a real Apache Kafka broker.
func TestKafkaFromHosts(t *testing.T) {
	testutil.RequireRoot(t, labTools...)
	for _, kind := range []broker.Kind{broker.Embedded, broker.Apache} {
		t.Run(string(kind), func(t *testing.T) {
			if kind == broker.Apache {
				if _, err := os.Stat(filepath.Join(broker.DefaultKafkaHome, "libs")); err != nil {
					t.Skipf("Apache Kafka not assembled in %s (run `make install`)", broker.DefaultKafkaHome)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			base, name := t.TempDir(), uniqueName()
			l, err := lab.Up(ctx, lab.Config{Name: name, BaseDir: base, Broker: kind, Subnet: "10.231.7.0/24"})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := l.Down(context.Background()); err != nil {
					t.Errorf("down: %v", err)
				}
				if left := lab.Find(base, name); !left.Empty() {
					t.Errorf("down left %s", left)
				}
			}()
			topic := "reach-" + name
			for _, h := range l.Hosts {
				cl, err := kgo.NewClient(kgo.SeedBrokers(l.BrokerAddr), kgo.Dialer(h.DialContext),
					kgo.AllowAutoTopicCreation(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
				if err != nil {
					t.Fatal(err)
				}
				if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("from " + h.Name)}).FirstErr(); err != nil {
					cl.Close()
					t.Fatalf("produce from host %s to %s broker at %s: %v", h.Name, kind, l.BrokerAddr, err)
				}
				seen := false
				for !seen && ctx.Err() == nil {
					fs := cl.PollFetches(ctx)
					fs.EachRecord(func(r *kgo.Record) { seen = seen || string(r.Value) == "from "+h.Name })
				}
				cl.Close()
				if !seen {
					t.Fatalf("host %s did not read back its record", h.Name)
				}
			}
		})
	}
}

// TestUplinkThrottle: a throttled lab has a tbf qdisc at the given rate on both ends of each link.
func TestUplinkThrottle(t *testing.T) {
	testutil.RequireRoot(t, labTools...)
	ctx := context.Background()
	base, name := t.TempDir(), uniqueName()
	l, err := lab.Up(ctx, lab.Config{Name: name, BaseDir: base, Hosts: []string{"fog"}, UplinkMbit: 100, Subnet: "10.231.8.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Down(ctx)
	h := l.Hosts[0]
	for _, args := range [][]string{{"tc", "qdisc", "show", "dev", h.Veth}, {"ip", "netns", "exec", h.NetNS, "tc", "qdisc", "show", "dev", "eth0"}} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
		if !strings.Contains(string(out), "tbf") || !strings.Contains(string(out), "rate 100Mbit") {
			t.Errorf("%v: want a tbf qdisc at 100Mbit, got %s", args, out)
		}
	}
	if err := h.SetUplink(ctx, 0); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("tc", "qdisc", "show", "dev", h.Veth).CombinedOutput()
	if strings.Contains(string(out), "tbf") {
		t.Errorf("SetUplink(0) left %s", out)
	}
}

// TestTeardownAfterKilledRun: a process brings a lab up, starts a container and is killed with
// SIGKILL; Find sees what it left and Teardown removes all of it.
func TestTeardownAfterKilledRun(t *testing.T) {
	testutil.RequireRoot(t, labTools...)
	if os.Getenv("FTWIN_LAB_CHILD") != "" {
		return
	}
	base, name := t.TempDir(), uniqueName()
	bin := testbin.Build(t, testbin.Counter)
	child := exec.Command(os.Args[0], "-test.run=^TestLabChild$", "-test.v")
	child.Env = append(os.Environ(), "FTWIN_LAB_CHILD="+strings.Join([]string{base, name, bin}, ","))
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	ready := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "LAB-READY") {
			ready = true
			break
		}
	}
	if !ready {
		_ = child.Wait()
		t.Fatal("child did not bring the lab up")
	}
	_ = child.Process.Signal(syscall.SIGKILL)
	_ = child.Wait()
	t.Cleanup(func() { _ = lab.Teardown(context.Background(), base, name) }) // if an assertion below fails

	left := lab.Find(base, name)
	if len(left.NetNS) != 2 || len(left.Links) != 3 || len(left.Processes) < 4 || left.Dir == "" {
		t.Fatalf("after the kill, Find = %s; want 2 namespaces, the bridge and 2 veths, the daemons, shim and container", left)
	}
	if err := lab.Teardown(context.Background(), base, name); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	if left := lab.Find(base, name); !left.Empty() {
		t.Fatalf("teardown left %s", left)
	}
	for _, pid := range lab.Find(base, name).Processes {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still alive", pid)
		}
	}
	// A second teardown finds nothing and succeeds.
	if err := lab.Teardown(context.Background(), base, name); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}

// TestLabChild is the killed process of TestTeardownAfterKilledRun; it does nothing on its own.
func TestLabChild(t *testing.T) {
	env := os.Getenv("FTWIN_LAB_CHILD")
	if env == "" {
		t.Skip("helper process of TestTeardownAfterKilledRun")
	}
	p := strings.Split(env, ",")
	ctx := context.Background()
	l, err := lab.Up(ctx, lab.Config{Name: p[1], BaseDir: p[0], Broker: broker.None, Subnet: "10.231.9.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Hosts[0].Run(ctx, lab.Workload{ID: "victim", Binary: p[2]}); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("LAB-READY\n")
	time.Sleep(time.Hour)
}
