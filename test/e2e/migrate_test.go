package e2e

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/counter/state"
)

const probeURL = "http://127.0.0.1:8080/healthz"

// migrationLab is a two-host lab with certificates and an agent on each host.
type migrationLab struct {
	*lab.Lab
	pki    string
	agents map[string]*lab.RunningAgent
	bin    string
}

func newMigrationLab(t *testing.T, edit map[string]func(*agent.Config)) *migrationLab {
	t.Helper()
	requireLabTools(t)
	ctx := context.Background()
	base := t.TempDir()
	l, err := lab.Up(ctx, lab.Config{Name: labName(t), BaseDir: base, Hosts: []string{"cloud", "fog"}, Subnet: "10.231.30.0/24"})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	ml := &migrationLab{Lab: l, pki: t.TempDir(), agents: map[string]*lab.RunningAgent{}, bin: buildCounter(t)}
	t.Cleanup(func() {
		for _, a := range ml.agents {
			_ = a.Close()
		}
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
		if left := lab.Find(base, l.Name); !left.Empty() {
			t.Errorf("lab down left %s", left)
		}
	})
	var hosts []pki.Host
	for _, h := range l.Hosts {
		hosts = append(hosts, pki.Host{Name: h.Name, IPs: []net.IP{net.ParseIP(h.IP)}})
	}
	if err := pki.Init(ml.pki, hosts); err != nil {
		t.Fatal(err)
	}
	for _, h := range l.Hosts {
		a, err := h.StartAgent(ctx, ml.pki, edit[h.Name])
		if err != nil {
			t.Fatal(err)
		}
		ml.agents[h.Name] = a
		// Base images are deployed on every host beforehand, as they would be from a registry.
		if _, err := h.ImportImage(ctx, lab.Workload{Binary: ml.bin}); err != nil {
			t.Fatal(err)
		}
	}
	return ml
}

func (ml *migrationLab) run(t *testing.T, host *lab.Host, id string, extraArgs ...string) state.State {
	t.Helper()
	args := append([]string{"-mem-mib", "32", "-interval", "50ms", "-listen", "127.0.0.1:8080"}, extraArgs...)
	w := lab.Workload{ID: id, Binary: ml.bin, Args: args}
	if err := host.Run(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	return waitState(t, host.LogPath(id), func(s state.State) bool { return s.Tick >= 3 })
}

// migrate moves container id from one host to another through the agents.
func (ml *migrationLab) migrate(t *testing.T, from, to *lab.Host, id string, opts ...func(*migrate.Options)) (*migrate.Report, error) {
	t.Helper()
	tlsCfg, err := pki.ClientConfig(ml.pki, from.Name, to.Name)
	if err != nil {
		t.Fatal(err)
	}
	client, err := from.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	o := migrate.Options{
		Namespace: lab.Namespace, Container: id, Target: ml.agents[to.Name].Addr, TLS: tlsCfg,
		SourceHost: from.Name, Probe: probeURL, PhaseTimeout: time.Minute,
	}
	for _, f := range opts {
		f(&o)
	}
	ctx := context.Background()
	// The migrator runs on the source host: it reaches the agent from there.
	o.AgentOpts = append([]agent.ClientOpt{agent.WithDialer(from.DialContext)}, o.AgentOpts...)
	return migrate.Migrate(ctx, client, o)
}

// continues asserts that the workload on host continues exactly where prev left off.
func continues(t *testing.T, host *lab.Host, id string, prev state.State) state.State {
	t.Helper()
	var first state.State
	waitState(t, host.LogPath(id), func(s state.State) bool { return s.StartNS == prev.StartNS && s.Tick > prev.Tick+2 })
	for _, s := range allStates(t, host.LogPath(id)) {
		if s.StartNS == prev.StartNS && s.Tick > prev.Tick {
			first = s
			break
		}
	}
	if first.Tick != prev.Tick+1 || !first.MemOK {
		t.Fatalf("on %s the workload resumed at %+v; want tick %d with intact memory (source's last: %+v)", host.Name, first, prev.Tick+1, prev)
	}
	return first
}

func lastState(t *testing.T, h *lab.Host, id string) state.State {
	t.Helper()
	s := allStates(t, h.LogPath(id))
	if len(s) == 0 {
		t.Fatalf("no output of %s on %s", id, h.Name)
	}
	return s[len(s)-1]
}

// TestMigrateAndBack: a stateful workload migrated cloud→fog→cloud over mTLS continues from
// its state each time, and exactly one copy runs after each migration.
func TestMigrateAndBack(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "twin"
	ml.run(t, cloud, id)
	for i, hop := range [][2]*lab.Host{{cloud, fog}, {fog, cloud}} {
		from, to := hop[0], hop[1]
		// The second hop claims a session timeout the expected downtime approaches.
		timeout := time.Duration(0)
		if i == 1 {
			timeout = 2 * time.Second
		}
		rep, err := ml.migrate(t, from, to, id, func(o *migrate.Options) { o.SessionTimeout = timeout })
		if err != nil {
			t.Fatalf("migrate %s→%s: %v\n%+v", from.Name, to.Name, err, rep)
		}
		var phases []migrate.Phase
		for _, p := range rep.Phases {
			phases = append(phases, p.Name)
		}
		want := []migrate.Phase{migrate.Preflight, migrate.Quiesce, migrate.Checkpoint, migrate.Transfer, migrate.Restore, migrate.Resume, migrate.Verify, migrate.Commit}
		if len(phases) != len(want) {
			t.Fatalf("phases %v, want %v", phases, want)
		}
		if rep.Result != "committed" || rep.Downtime <= 0 || rep.CRIU == nil || rep.CRIU.GetPagesWritten() == 0 ||
			rep.CRIURestore == nil || rep.CRIURestore.GetRestoreTime() == 0 {
			t.Errorf("report incomplete: result %q downtime %v criu dump %v restore %v", rep.Result, rep.Downtime, rep.CRIU, rep.CRIURestore)
		}
		if rep.Transfer.BlobsSkipped == 0 || rep.Transfer.WireBytes == 0 || rep.Transfer.WireBytes >= rep.Transfer.BytesSent {
			t.Errorf("transfer %+v: want base image skipped and the checkpoint compressed", rep.Transfer)
		}
		warned := strings.Contains(strings.Join(rep.Warnings, "\n"), "approaches the group session timeout")
		if warned != (i == 1) {
			t.Errorf("session-timeout warning %v with timeout %v and expected downtime %v: %v", warned, timeout, rep.ExpectedDowntime, rep.Warnings)
		}
		t.Logf("%s→%s: downtime %v, frozen %dµs, sent %d B (wire %d B)", from.Name, to.Name, rep.Downtime, rep.CRIU.GetFrozenTime(), rep.Transfer.BytesSent, rep.Transfer.WireBytes)
		continues(t, to, id, lastState(t, from, id))
		assertRunsOnlyOn(t, ml, id, to)
	}
}

// assertRunsOnlyOn checks that container id exists, running, on host want and nowhere else.
func assertRunsOnlyOn(t *testing.T, ml *migrationLab, id string, want *lab.Host) {
	t.Helper()
	for _, h := range ml.Hosts {
		ids := containers(t, h)
		has := len(ids) == 1 && ids[0] == id
		if h == want && !has {
			t.Errorf("%s should run %s, has %v", h.Name, id, ids)
		}
		if h != want && len(ids) != 0 {
			t.Errorf("%s should have no container, has %v", h.Name, ids)
		}
	}
}
