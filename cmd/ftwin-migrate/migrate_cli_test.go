package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/counter/state"
)

// TestMigrateCLI: the admin's path on a lab — lab up, lab run, `migrate` as printed by lab up —
// moves the workload, which continues from its state; offline checkpoint/inspect work too;
// bad input gives clear errors.
func TestMigrateCLI(t *testing.T) {
	requireLabTools(t)
	_, counter := binaries(t)
	l := newLab(t)
	const prefix = "10.231.24."
	l.mustLab("up", "--broker", "none", "--subnet", prefix+"0/24")
	l.mustLab("run", "--workload", counter, "cloud", "twin", "--", "-mem-mib", "16", "-interval", "50ms", "-listen", "127.0.0.1:8080")
	cloudLog := filepath.Join(l.dir(), "hosts", "cloud", "logs", "twin.log")
	waitTick(t, cloudLog, 3)

	base := []string{"--address", filepath.Join(l.dir(), "hosts", "cloud", "containerd.sock"), "--namespace", "ftwin",
		"--pki", filepath.Join(l.dir(), "pki"), "--host", "cloud"}
	migrateArgs := func(extra ...string) []string {
		return append(append([]string{"migrate"}, base...), extra...)
	}

	// Bad input: clear errors, nothing moves.
	for _, c := range []struct {
		args []string
		want string
	}{
		{migrateArgs("--to", prefix+"12:7443"), "one argument, the container id"},
		{migrateArgs("--to", prefix+"12:7443", "nope"), `"nope"`},
		{migrateArgs("--to", prefix+"12:7444", "twin"), "unreachable"},
		{migrateArgs("--to", prefix+"12:7443", "--tcp", "sideways", "twin"), `TCP mode "sideways"`},
	} {
		r := l.run(c.args...)
		if r.code == 0 || !strings.Contains(r.stdout+r.stderr, c.want) {
			t.Errorf("want a failure naming %q, got %s", c.want, r)
		}
	}

	r := l.run(migrateArgs("--to", prefix+"12:7443", "--probe", "http://127.0.0.1:8080/healthz", "--json", "twin")...)
	if r.code != 0 {
		t.Fatal(r)
	}
	var rep migrate.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("migrate --json printed no report: %v\n%s", err, r)
	}
	if rep.Result != "committed" || rep.To != "fog" || len(rep.Phases) != 8 || rep.CRIU == nil {
		t.Errorf("report: %+v", rep)
	}
	last, err := state.Last(cloudLog)
	if err != nil {
		t.Fatal(err)
	}
	fogLog := filepath.Join(l.dir(), "hosts", "fog", "agent", "logs", "ftwin-twin.log")
	after := waitTick(t, fogLog, last.Tick+2)
	if after.StartNS != last.StartNS || !after.MemOK {
		t.Errorf("on fog %+v does not continue %+v", after, last)
	}

	// Offline: checkpoint on fog into a directory and inspect it.
	dir := filepath.Join(t.TempDir(), "ckpt")
	fogBase := []string{"--address", filepath.Join(l.dir(), "hosts", "fog", "containerd.sock"), "--namespace", "ftwin"}
	if r := l.run(append(append([]string{"checkpoint"}, fogBase...), "-o", dir, "twin")...); r.code != 0 {
		t.Fatal(r)
	}
	r = l.run("inspect", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "base image  ftwin.local/counter:latest") || !strings.Contains(r.stdout, "criu.checkpoint.criu.tar") {
		t.Errorf("inspect: %s", r)
	}
	if r := l.run("inspect", t.TempDir()); r.code == 0 || !strings.Contains(r.stderr, "not a checkpoint directory") {
		t.Errorf("inspect of an empty directory: %s", r)
	}
}

// waitTick waits until the workload log at path shows a tick of at least n.
func waitTick(t *testing.T, path string, n uint64) state.State {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if s, err := state.Last(path); err == nil && s.Tick >= n {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%s did not reach tick %d in 30s; log:\n%s", path, n, b)
	return state.State{}
}
