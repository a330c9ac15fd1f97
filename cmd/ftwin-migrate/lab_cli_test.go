package main

// End-to-end tests of the `lab` commands: the CLI is built once and driven as a user would
// drive it, against real network namespaces, containerd daemons, runc and CRIU. They need
// root; `go test -short` skips them.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
)

var (
	binDir    string // holds the built ftwin-migrate and counter binaries
	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// requireLabTools skips the test unless it can bring up a lab (root, network namespaces,
// containerd, CRIU).
func requireLabTools(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "containerd", "runc", "criu", "ip", "tc", "nsenter", "unshare")
}

// binaries builds the CLI (from this package's directory) and the counter workload, once.
func binaries(t *testing.T) (cli, counter string) {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "ftwin-cli-test-"); buildErr != nil {
			return
		}
		for _, args := range [][]string{
			{"go", "build", "-o", filepath.Join(binDir, "ftwin-migrate"), "."},
			{"go", "build", "-o", filepath.Join(binDir, "counter"), "github.com/ftwin-migrate/ftwin-migrate/test/workloads/counter"},
		} {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return filepath.Join(binDir, "ftwin-migrate"), filepath.Join(binDir, "counter")
}

// labName is unique per test: "c" and 5 random hex digits.
func labName() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "c" + hex.EncodeToString(b[:])[:5]
}

// cliLab is one lab driven through the CLI.
type cliLab struct {
	t          *testing.T
	bin        string
	name, base string
}

// newLab names a lab with its own base directory; lab down runs at cleanup whatever happens.
func newLab(t *testing.T) *cliLab {
	bin, _ := binaries(t)
	l := &cliLab{t: t, bin: bin, name: labName(), base: t.TempDir()}
	t.Cleanup(func() {
		// Registered after t.TempDir, so it runs before the base directory is removed.
		if r := l.run("lab", "down", "--name", l.name, "--base-dir", l.base); r.code != 0 {
			t.Errorf("cleanup: lab down: %s", r)
		}
	})
	return l
}

func (l *cliLab) dir() string { return filepath.Join(l.base, l.name) }

type runResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r runResult) String() string {
	return fmt.Sprintf("`ftwin-migrate %s` exited %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs the CLI with args as they are (callers add --name and --base-dir).
func (l *cliLab) run(args ...string) runResult {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := runResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		l.t.Fatalf("run ftwin-migrate %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// lab runs `ftwin-migrate lab SUB --name NAME --base-dir BASE ARGS...`.
func (l *cliLab) lab(sub string, args ...string) runResult {
	l.t.Helper()
	return l.run(append([]string{"lab", sub, "--name", l.name, "--base-dir", l.base}, args...)...)
}

// mustLab is lab, failing the test on a non-zero exit.
func (l *cliLab) mustLab(sub string, args ...string) runResult {
	l.t.Helper()
	r := l.lab(sub, args...)
	if r.code != 0 {
		l.t.Fatal(r)
	}
	return r
}

// statusJSON is the output of `lab status --json`.
type statusJSON struct {
	Lab *struct {
		Name       string `json:"name"`
		Dir        string `json:"dir"`
		Bridge     string `json:"bridge"`
		BridgeIP   string `json:"bridge_ip"`
		BrokerKind string `json:"broker_kind"`
		BrokerAddr string `json:"broker_addr"`
		Hosts      []struct {
			Name  string `json:"name"`
			IP    string `json:"ip"`
			NetNS string `json:"netns"`
		} `json:"hosts"`
	} `json:"lab"`
	Present struct {
		NetNS     []string
		Links     []string
		Processes []int
		Mounts    []string
		Dir       string
	} `json:"present"`
}

func (l *cliLab) status() statusJSON {
	l.t.Helper()
	r := l.mustLab("status", "--json")
	var s statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		l.t.Fatalf("lab status --json: %v\n%s", err, r)
	}
	return s
}

// netnsOf lists the network namespaces of the lab in `ip netns list`.
func (l *cliLab) netnsOf() []string {
	l.t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "ftl-"+l.name+"-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// assertGone checks that status finds nothing of the lab and no namespace of it exists.
func (l *cliLab) assertGone() {
	l.t.Helper()
	r := l.mustLab("status")
	if !strings.Contains(r.stdout, "lab "+l.name+": not up") {
		l.t.Errorf("status after down does not say the lab is not up:\n%s", r)
	}
	if strings.Contains(r.stdout, "present on this machine") {
		l.t.Errorf("status after down still finds something:\n%s", r)
	}
	s := l.status()
	if s.Lab != nil || len(s.Present.NetNS)+len(s.Present.Links)+len(s.Present.Processes)+len(s.Present.Mounts) > 0 || s.Present.Dir != "" {
		l.t.Errorf("status --json after down: lab %+v, present %+v", s.Lab, s.Present)
	}
	if ns := l.netnsOf(); len(ns) > 0 {
		l.t.Errorf("ip netns list still has %v", ns)
	}
	if _, err := os.Stat(l.dir()); err == nil {
		l.t.Errorf("%s still exists", l.dir())
	}
}

// hostLines checks that out lists hosts cloud and fog with their addresses in subnet prefix
// (for example "10.231.20.") and their namespaces.
func (l *cliLab) hostLines(what, out, prefix string) {
	l.t.Helper()
	for i, h := range []string{"cloud", "fog"} {
		clock := lab.HostClock(i) // each host's clocks are its own (CLOCK column)
		want := []string{h, fmt.Sprintf("%s%d", prefix, 11+i), "ftl-" + l.name + "-" + h,
			fmt.Sprintf("+%v,", clock.Monotonic), fmt.Sprintf("+%v", clock.Boottime),
			filepath.Join(l.dir(), "hosts", h, "containerd.sock")}
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == len(want) && strings.Join(f, " ") == strings.Join(want, " ") {
				found = true
			}
		}
		if !found {
			l.t.Errorf("%s does not list host %q as %q:\n%s", what, h, strings.Join(want, "  "), out)
		}
	}
}

// TestLabUpStatusDown: lab up with the embedded broker prints the hosts; status shows them
// and the broker, which a Kafka client in this process reaches; lab down removes everything,
// and a second lab down has nothing to do.
func TestLabUpStatusDown(t *testing.T) {
	requireLabTools(t)
	l := newLab(t)
	const prefix = "10.231.20."

	r := l.mustLab("up", "--broker", "kfake", "--subnet", prefix+"0/24")
	l.hostLines("lab up", r.stdout, prefix)
	wantBroker := "broker kfake " + prefix + "1:9092"
	if !strings.Contains(r.stdout, wantBroker) {
		t.Errorf("lab up does not print %q:\n%s", wantBroker, r)
	}
	if ns := l.netnsOf(); len(ns) != 2 {
		t.Errorf("ip netns list has %v for the lab, want its 2 hosts", ns)
	}

	r = l.mustLab("status")
	l.hostLines("lab status", r.stdout, prefix)
	if !strings.Contains(r.stdout, "lab "+l.name) || !strings.Contains(r.stdout, wantBroker) {
		t.Errorf("lab status does not show the lab and %q:\n%s", wantBroker, r)
	}

	s := l.status()
	if s.Lab == nil {
		t.Fatalf("status --json: no lab")
	}
	if s.Lab.BrokerKind != "kfake" || s.Lab.BrokerAddr != prefix+"1:9092" || len(s.Lab.Hosts) != 2 {
		t.Fatalf("status --json: lab %+v", *s.Lab)
	}
	if len(s.Present.NetNS) != 2 || len(s.Present.Links) != 3 || len(s.Present.Processes) < 3 || s.Present.Dir != l.dir() {
		t.Errorf("status --json: present %+v; want 2 namespaces, 3 links, 2 daemons and the broker, the directory", s.Present)
	}

	// The broker the status reports answers a Kafka client in this process (the root
	// namespace, where the lab's bridge is): a record produced is consumed back.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := "cli-" + l.name
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.Lab.BrokerAddr), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("hello " + l.name)}).FirstErr(); err != nil {
		cl.Close()
		t.Fatalf("produce to the broker at %s: %v", s.Lab.BrokerAddr, err)
	}
	seen := false
	for !seen && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) { seen = seen || string(rec.Value) == "hello "+l.name })
	}
	cl.Close()
	if !seen {
		t.Fatalf("did not read back the record from the broker at %s", s.Lab.BrokerAddr)
	}

	r = l.mustLab("down")
	if !strings.Contains(r.stdout, "lab "+l.name+": removed") {
		t.Errorf("lab down does not say it removed the lab:\n%s", r)
	}
	for _, pid := range s.Present.Processes {
		if alive(pid) {
			t.Errorf("process %d of the lab is still alive after lab down", pid)
		}
	}
	l.assertGone()

	r = l.mustLab("down")
	if !strings.Contains(r.stdout, "lab "+l.name+": nothing to remove") {
		t.Errorf("second lab down:\n%s", r)
	}
}

// TestLabStatusAfterCrash: the broker and one containerd of a lab die by SIGKILL; status
// reports what is left and points to lab down, which removes all of it.
func TestLabStatusAfterCrash(t *testing.T) {
	requireLabTools(t)
	l := newLab(t)
	l.mustLab("up", "--broker", "kfake", "--subnet", "10.231.21.0/24")

	var kfake, daemon int
	for _, pid := range l.status().Present.Processes {
		args := cmdline(pid)
		switch {
		case len(args) > 2 && args[1] == "lab" && args[2] == "serve-kfake":
			kfake = pid
		case len(args) > 0 && filepath.Base(args[0]) == "containerd" &&
			strings.Contains(strings.Join(args, " "), filepath.Join(l.dir(), "hosts", "cloud")+"/"):
			daemon = pid
		}
	}
	if kfake == 0 || daemon == 0 {
		t.Fatalf("among the lab's processes, kfake is %d and cloud's containerd %d; want both", kfake, daemon)
	}
	for _, pid := range []int{kfake, daemon} {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	for _, pid := range []int{kfake, daemon} {
		deadline := time.Now().Add(10 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			t.Fatalf("process %d survived SIGKILL", pid)
		}
	}

	r := l.mustLab("status")
	if !strings.Contains(r.stdout, "present on this machine:") || !strings.Contains(r.stdout, "ftl-"+l.name+"-fog") {
		t.Errorf("status after the crash does not report the leftovers:\n%s", r)
	}
	if !strings.Contains(r.stdout, "lab down --name "+l.name) {
		t.Errorf("status after the crash does not suggest `lab down --name %s`:\n%s", l.name, r)
	}
	left := l.status().Present
	for _, pid := range left.Processes {
		if pid == kfake || pid == daemon {
			t.Errorf("status --json lists the killed process %d", pid)
		}
	}
	if len(left.Processes) == 0 || len(left.NetNS) != 2 {
		t.Errorf("status --json after the crash: present %+v; want fog's containerd and both namespaces", left)
	}

	r = l.mustLab("down")
	if !strings.Contains(r.stdout, "lab "+l.name+": removed") {
		t.Errorf("lab down after the crash:\n%s", r)
	}
	for _, pid := range left.Processes {
		if alive(pid) {
			t.Errorf("process %d of the lab is still alive after lab down", pid)
		}
	}
	l.assertGone()
}

// TestLabBadInput: mistakes are refused with a message naming what was wrong, and leave nothing.
func TestLabBadInput(t *testing.T) {
	requireLabTools(t)
	l := newLab(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"lab", "up", "--name", "BAD_NAME", "--base-dir", l.base, "--subnet", "10.231.22.0/24"}, `"BAD_NAME"`},
		{[]string{"lab", "up", "--name", l.name, "--base-dir", l.base, "--broker", "nope", "--subnet", "10.231.22.0/24"}, `"nope"`},
		{[]string{"lab", "smoke", "--name", l.name, "--base-dir", l.base, "--workload", "/nonexistent"}, "/nonexistent"},
		{[]string{"lab", "logs", "--name", l.name, "--base-dir", l.base, "cloud"}, "takes HOST and ID"},
		{[]string{"lab", "logs", "--name", l.name, "--base-dir", l.base, "cloud", "twin"}, l.name},
		{[]string{"lab", "logs", "--name", l.name, "--base-dir", l.base, "broker"}, "is not up"},
		{[]string{"lab", "kafka", "--name", l.name, "--base-dir", l.base, "nonesuch"}, `no Kafka tool "nonesuch"`},
		{[]string{"lab", "kafka", "--name", l.name, "--base-dir", l.base, "topics", "--list"}, "is not up"},
	}
	for _, c := range cases {
		r := l.run(c.args...)
		if r.code == 0 {
			t.Errorf("succeeded: %s", r)
			continue
		}
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("the error does not name %s: %s", c.want, r)
		}
		if strings.Contains(r.stderr, "panic") {
			t.Errorf("panicked: %s", r)
		}
	}
	if entries, _ := os.ReadDir(l.base); len(entries) > 0 {
		t.Errorf("refused commands left %v in %s", entries, l.base)
	}
	if ns := l.netnsOf(); len(ns) > 0 {
		t.Errorf("refused commands left namespaces %v", ns)
	}
}

// TestLabSmoke: the smoke command moves the counter cloud→fog→cloud, prints a row per move and
// its verdict, and exits 0 with the lab removed.
func TestLabSmoke(t *testing.T) {
	requireLabTools(t)
	l := newLab(t)
	_, counter := binaries(t)
	args := []string{"--workload", counter, "--mem-mib", "16"}
	// Give the smoke lab a subnet of its own when the command takes one.
	if help := l.run("lab", "smoke", "--help"); strings.Contains(help.stdout+help.stderr, "--subnet") {
		args = append(args, "--subnet", "10.231.23.0/24")
	}
	r := l.lab("smoke", args...)
	if r.code != 0 {
		t.Fatal(r)
	}
	t.Logf("lab smoke:\n%s", r.stdout)
	rows := map[string]string{}
	smoke := ""
	for _, line := range strings.Split(r.stdout, "\n") {
		trimmed := strings.TrimSpace(line)
		for _, move := range []string{"cloud→fog", "fog→cloud"} {
			if strings.HasPrefix(trimmed, move) {
				rows[move] = trimmed
			}
		}
		if strings.HasPrefix(line, "smoke:") {
			smoke = line
		}
	}
	for _, move := range []string{"cloud→fog", "fog→cloud"} {
		row, ok := rows[move]
		if !ok {
			t.Errorf("no row for the move %s:\n%s", move, r)
		} else if !strings.HasSuffix(row, "intact") {
			t.Errorf("move %s: memory not reported intact: %q", move, row)
		}
	}
	if !strings.Contains(r.stdout, "MOVE") || !strings.Contains(r.stdout, "DOWNTIME") {
		t.Errorf("no table header:\n%s", r)
	}
	if smoke == "" {
		t.Errorf("no line starting smoke:\n%s", r)
	}
	l.assertGone()
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; it only waits for its parent to reap it.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(b[i+1:]), []byte("Z"))
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}
