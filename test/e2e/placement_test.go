package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/fleet"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
)

// placementPolicy is the policy of the placement tests: quick to fire, so that a test sees
// a reaction within seconds.
const placementPolicy = `
interval: 1s
budget: 2
cooldown: 15s
hosts:
  cloud: {role: cloud}
  fog1: {role: fog, capacity: 8}
  fog2: {role: fog, capacity: 8}
headroom: "host.cpu < 0.8 && host.twins <= host.capacity"
drain: [home, cloud]
rules:
  - name: shed-hot-fog
    scope: host
    when: "host.role == 'fog' && host.cpu > 0.85"
    for: 4s
    to: [cloud]
    order: "twin.lag"
  - name: return-home
    scope: twin
    when: "twin.host != twin.home && home.cpu < 0.5 && !home.cordoned"
    for: 6s
    to: [home]
`

// testHostCores is the share of the machine a simulated host counts as. At a quarter of a core
// one twin measured 0.12–0.15 of it, so the policy's return-home (home.cpu < 0.5) let two or
// three twins home and, on a loaded machine, not the fourth (seen in CI: tw3 left on the cloud
// after 3 minutes); at half a core four twins measure about 0.3, and fog1's busy loops still
// about 3 (shed at 0.85).
const testHostCores = 0.5

// startFleet brings up cloud, fog1 and fog2 with twins on kind's broker (FTWIN_PLACEMENT_BROKER
// overrides it for every placement test).
func startFleet(t *testing.T, subnet string, kind broker.Kind, twins []placestate.Twin) *fleet.Running {
	t.Helper()
	requireLabTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if k := os.Getenv("FTWIN_PLACEMENT_BROKER"); k != "" { // apache: the same tests on a real Kafka
		var err error
		if kind, err = broker.ParseKind(k); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fleet.UpConfig{
		Lab:   lab.Config{Name: "q" + labName(t)[1:], BaseDir: t.TempDir(), Hosts: []string{"cloud", "fog1", "fog2"}, Subnet: subnet, Broker: kind},
		Twins: twins, Twin: fleet.TwinConfig{Binary: testbin.Build(t, twinPkg), StateMiB: 16, Devices: 8}, Rate: 40,
		// A quiesce that does not reach a boundary (seen on this shared machine: the twin's
		// prepare waiting minutes) rolls back within 45 s and is retried after the cooldown.
		Options: []fleet.Option{fleet.WithPhaseTimeout(45 * time.Second)},
	}
	r, err := fleet.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("bring up the fleet: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, tw := range twins {
				for _, h := range r.Lab.Hosts {
					if b, err := os.ReadFile(h.LogPath(tw.ID)); err == nil {
						t.Logf("%s on %s, last of its log:\n%s", tw.ID, h.Name, tail(string(b), 1500))
					}
				}
			}
		}
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if left := lab.Find(cfg.Lab.BaseDir, cfg.Lab.Name); !left.Empty() {
			t.Errorf("left behind: %s", left)
		}
	})
	return r
}

func placementPolicyT(t *testing.T) *placement.Policy {
	t.Helper()
	p, err := placement.Parse([]byte(placementPolicy))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func assertFleetExactlyOnce(t *testing.T, r *fleet.Running) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	verdicts, err := r.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range verdicts {
		t.Logf("%s: in %d out %d lost %d dup %d", v.Twin, v.In, v.Report.EventsOut, v.Report.Lost, v.Report.Duplicated)
		if !v.OK() || v.In == 0 {
			t.Errorf("%s not exactly once: in %d, out %d, lost %d, duplicated %d (worst %v)", v.Twin, v.In, v.Report.EventsOut, v.Report.Lost, v.Report.Duplicated, v.Report.Worst(3))
		}
	}
}

// TestPlacementDrainHost: four twins run on fog1 under load — two at home, two whose sensors
// are at fog2 — and fog1 is drained live, two migrations at a time: the fog2 twins go home,
// the others to the cloud; fog1 is cordoned and empty after, and every twin processed every
// event exactly once.
func TestPlacementDrainHost(t *testing.T) {
	var twins []placestate.Twin
	for i, home := range []string{"fog1", "fog1", "fog2", "fog2"} {
		tw := fleet.Spec(fmt.Sprintf("tw%d", i), home)
		tw.Host = "fog1"
		twins = append(twins, tw)
	}
	r := startFleet(t, "10.240.10.0/24", broker.Embedded, twins)
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := r.Drain(ctx, r.Store, placementPolicyT(t), "fog1", fleet.DrainOptions{Concurrency: 2,
		Progress: func(p fleet.Progress) {
			t.Logf("[%d/%d] %s done=%v %s", p.Finished, p.Total, p.Decision, p.Done, p.Result.Result())
		}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"tw0": "cloud", "tw1": "cloud", "tw2": "fog2", "tw3": "fog2"}
	for _, m := range res.Moves {
		t.Logf("%s %s→%s %s stream gap %v took %v", m.Twin, m.From, m.To, m.Result(), m.StreamGap, m.End.Sub(m.Start))
		if !m.Moved() || want[m.Twin] != m.To {
			t.Errorf("%s: %s→%s %s (%v), want moved to %s", m.Twin, m.From, m.To, m.Result(), m.Err, want[m.Twin])
		}
	}
	if len(res.Moves) != 4 || len(res.Stayed) != 0 || len(res.Blocked) != 0 {
		t.Errorf("drain: %d moves, stayed %v, blocked %v", len(res.Moves), res.Stayed, res.Blocked)
	}
	where, err := r.Locate(ctx, []string{"tw0", "tw1", "tw2", "tw3"})
	if err != nil {
		t.Fatal(err)
	}
	for id, h := range want {
		if where[id] != h {
			t.Errorf("%s runs on %q, want %s", id, where[id], h)
		}
	}
	st, err := r.Store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Cordons["fog1"]; !ok {
		t.Errorf("fog1 not cordoned after the drain: %v", st.Cordons)
	}
	for id, h := range want {
		if st.Twins[id].Host != h || st.Moves[id].InFlight() || st.Moves[id].Result != "committed" {
			t.Errorf("state of %s: %+v, move %+v", id, st.Twins[id], st.Moves[id])
		}
	}
	time.Sleep(2 * time.Second)
	assertFleetExactlyOnce(t, r)
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// moveLog collects the migrations every controller of a test ended.
type moveLog struct {
	mu    sync.Mutex
	moves []fleet.MoveResult
	by    map[string][]string // twin → "controller:from→to"
}

func (l *moveLog) add(by string) func(fleet.MoveResult) {
	return func(m fleet.MoveResult) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.moves = append(l.moves, m)
		if l.by == nil {
			l.by = map[string][]string{}
		}
		if m.Moved() {
			l.by[m.Twin] = append(l.by[m.Twin], fmt.Sprintf("%s:%s→%s", by, m.From, m.To))
		}
	}
}

// check: no twin had two migrations at once; every migration that ran either committed or
// rolled back cleanly (the twin stays on its source, exactly once either way).
func (l *moveLog) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	by := map[string][]fleet.MoveResult{}
	for _, m := range l.moves {
		t.Logf("%s %s→%s (%s): %s, took %v, err %v", m.Twin, m.From, m.To, m.Rule, m.Result(), m.End.Sub(m.Start).Round(time.Millisecond), m.Err)
		if m.Start.IsZero() {
			if !errors.Is(m.Err, fleet.ErrNotRecorded) {
				t.Errorf("%s: a migration neither recorded nor run: %v", m.Twin, m.Err)
			}
			continue
		}
		if r := m.Result(); r != migrate.Committed && r != migrate.RolledBack {
			t.Errorf("%s %s→%s ended %s: %v", m.Twin, m.From, m.To, r, m.Err)
		}
		by[m.Twin] = append(by[m.Twin], m)
	}
	for id, ms := range by {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Start.Before(ms[j].Start) })
		for i := 1; i < len(ms); i++ {
			if ms[i].Start.Before(ms[i-1].End) {
				t.Errorf("%s migrated twice at once: %s→%s from %v and %s→%s from %v", id, ms[i-1].From, ms[i-1].To, ms[i-1].Start, ms[i].From, ms[i].To, ms[i].Start)
			}
		}
	}
}

func (l *moveLog) legs(twin string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.by[twin]...)
}

// runningController is a controller run by a test.
type runningController struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// stop stops the controller and returns what its Run returned.
func (r *runningController) stop() error { r.cancel(); <-r.done; return r.err }

func startController(t *testing.T, r *fleet.Running, name string, log *moveLog, edit func(*fleet.ControllerConfig)) *runningController {
	t.Helper()
	lg := slog.New(slog.NewTextHandler(logWriter{t}, nil)).With("ctl", name)
	n := 0
	cfg := fleet.ControllerConfig{Policy: placementPolicyT(t), Name: name, ResolveAfter: 20 * time.Second, Log: lg, OnMove: log.add(name),
		// The machine is shared (other tests load it): a simulated host has half a core
		// (testHostCores), so that two busy loops on it are plainly an overload and its twins
		// alone are not.
		Measure: fleet.MeasureConfig{HostCores: testHostCores},
		OnSample: func(s placement.Sample) {
			if n++; n%5 == 0 {
				lg.Info("sample", "cloud", s.Hosts["cloud"].CPU, "fog1", s.Hosts["fog1"].CPU, "fog2", s.Hosts["fog2"].CPU)
			}
		}}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	c, err := r.NewController(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rc := &runningController{cancel: cancel, done: make(chan struct{})}
	go func() { rc.err = c.Run(ctx); close(rc.done) }()
	t.Cleanup(func() { _ = rc.stop() })
	return rc
}

// waitPlaced waits until every twin of ids runs on host.
func waitPlaced(t *testing.T, r *fleet.Running, ids []string, host string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		where, err := r.Locate(context.Background(), ids)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, id := range ids {
			if where[id] == host {
				n++
			}
		}
		if n == len(ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the twins %v are at %v, not all on %s", timeout, ids, where, host)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestPlacementControllerLoad: real CPU load on fog1 (busy loops in its cgroup) makes the
// controller shed fog1's twins to the cloud, largest lag first, two at a time; when the load
// ends they come home. fog2's twin never moves, nothing moves twice per leg, and every twin
// processes every event exactly once.
func TestPlacementControllerLoad(t *testing.T) {
	twins := []placestate.Twin{fleet.Spec("tw0", "fog1"), fleet.Spec("tw1", "fog1"), fleet.Spec("tw2", "fog1"), fleet.Spec("tw3", "fog2")}
	r := startFleet(t, "10.240.11.0/24", broker.Embedded, twins)
	if ok, what := fleet.PSIPerCgroup(); !ok {
		t.Logf("pressure: %s", what)
	}
	var log moveLog
	ctl := startController(t, r, "ctl-a", &log, nil)
	time.Sleep(5 * time.Second)
	fog1, _ := r.Lab.Host("fog1")
	load, err := fleet.StartLoad(fog1, 2)
	if err != nil {
		t.Fatal(err)
	}
	loaded := time.Now()
	fog1Twins := []string{"tw0", "tw1", "tw2"}
	waitPlaced(t, r, fog1Twins, "cloud", 3*time.Minute)
	t.Logf("load on fog1 → its twins on the cloud in %v", time.Since(loaded))
	load.Stop()
	unloaded := time.Now()
	waitPlaced(t, r, fog1Twins, "fog1", 3*time.Minute)
	t.Logf("load gone → its twins home in %v", time.Since(unloaded))
	time.Sleep(3 * time.Second)
	if err := ctl.stop(); err != nil {
		t.Errorf("controller: %v", err)
	}
	for _, id := range fog1Twins {
		if legs := log.legs(id); len(legs) != 2 || legs[0] != "ctl-a:fog1→cloud" || legs[1] != "ctl-a:cloud→fog1" {
			t.Errorf("%s moved %v, want out to the cloud and back once", id, legs)
		}
	}
	if legs := log.legs("tw3"); len(legs) != 0 {
		t.Errorf("tw3 (fog2) moved: %v", legs)
	}
	log.check(t)
	assertFleetExactlyOnce(t, r)
}

// TestPlacementControllerFencing: a second controller started while the first is migrating
// fences it (the first stops; its migrations end) and takes over: it finds the first's
// migrations in flight and leaves them; then it is stopped mid-work and a third carries on
// from the state in Kafka. No twin is ever migrated twice for one leg, and every twin is
// exactly once. It runs on Apache Kafka: one active controller rests on Kafka's own fencing,
// which kfake only imitates (placestate's unit tests fence on kfake).
func TestPlacementControllerFencing(t *testing.T) {
	twins := []placestate.Twin{fleet.Spec("tw0", "fog1"), fleet.Spec("tw1", "fog1"), fleet.Spec("tw2", "fog1"), fleet.Spec("tw3", "fog1")}
	ids := []string{"tw0", "tw1", "tw2", "tw3"}
	r := startFleet(t, "10.240.12.0/24", broker.Apache, twins)
	var log moveLog
	firstDecision := make(chan struct{})
	var once sync.Once
	a := startController(t, r, "ctl-a", &log, func(c *fleet.ControllerConfig) {
		c.OnStart = func(placement.Decision) { once.Do(func() { close(firstDecision) }) }
	})
	load := loadFog1UntilDecided(t, r, firstDecision, "controller A")
	defer load.Stop()
	// B starts while A's migrations run: A is fenced.
	b := startController(t, r, "ctl-b", &log, nil)
	select {
	case <-a.done:
		if err := a.err; !errors.Is(err, placestate.ErrFenced) {
			t.Fatalf("controller A ended with %v, want ErrFenced", err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("controller A was not fenced")
	}
	waitPlaced(t, r, ids, "cloud", 3*time.Minute)
	load.Stop()
	// B stops (as a restart would) once it has started a move home; C carries on.
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		where, _ := r.Locate(context.Background(), ids)
		if n := countOn(where, "fog1"); n > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := b.stop(); err != nil {
		t.Errorf("controller B: %v", err)
	}
	c := startController(t, r, "ctl-c", &log, nil)
	waitPlaced(t, r, ids, "fog1", 3*time.Minute)
	time.Sleep(3 * time.Second)
	if err := c.stop(); err != nil {
		t.Errorf("controller C: %v", err)
	}
	for _, id := range ids {
		legs := log.legs(id)
		t.Logf("%s: %v", id, legs)
		if len(legs) != 2 || !strings.HasSuffix(legs[0], ":fog1→cloud") || !strings.HasSuffix(legs[1], ":cloud→fog1") {
			t.Errorf("%s moved %v, want fog1→cloud and cloud→fog1 once each", id, legs)
		}
	}
	log.check(t)
	st, err := r.Store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for id, mv := range st.Moves {
		if mv.InFlight() {
			t.Errorf("%s: move left in flight in the state: %+v", id, mv)
		}
	}
	assertFleetExactlyOnce(t, r)
}

func countOn(where map[string]string, host string) int {
	n := 0
	for _, h := range where {
		if h == host {
			n++
		}
	}
	return n
}

// TestPlacementControllerKilled: the controller runs as its own process (the CLI) and is
// killed (SIGKILL) in the middle of its first migrations; a new controller finds them in
// flight, recovers a source left frozen (migrate.Recover through the target's agent) or
// resolves them from what the hosts show, and carries on: fog1's twins end on the cloud, never
// migrated twice at once, every event exactly once.
func TestPlacementControllerKilled(t *testing.T) {
	twins := []placestate.Twin{fleet.Spec("tw0", "fog1"), fleet.Spec("tw1", "fog1"), fleet.Spec("tw2", "fog1")}
	ids := []string{"tw0", "tw1", "tw2"}
	r := startFleet(t, "10.240.13.0/24", broker.Embedded, twins)
	cliBin := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(placementPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cliBin, "controller", "--name", r.Lab.Name, "--base-dir", filepath.Dir(r.Lab.Dir), "--policy", pol,
		"--instance", "ctl-proc", "--host-cores", fmt.Sprint(testHostCores), "--resolve-after", "20s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	decided := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if !strings.Contains(line, "msg=blocked") {
				t.Log("ctl-proc: " + line)
			}
			if strings.Contains(line, "msg=decision") {
				once.Do(func() { close(decided) })
			}
		}
	}()
	load := loadFog1UntilDecided(t, r, decided, "the controller process")
	defer load.Stop()
	time.Sleep(3 * time.Second) // into the migrations: past the start record, before their end
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	st, err := r.Store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	inflight := 0
	for id, mv := range st.Moves {
		if mv.InFlight() {
			inflight++
			t.Logf("left in flight by the killed controller: %s %s→%s", id, mv.From, mv.To)
		}
	}
	if inflight == 0 {
		t.Log("the killed controller had no migration in flight (it ended them within 3 s)")
	}
	var log moveLog
	c := startController(t, r, "ctl-new", &log, nil)
	waitPlaced(t, r, ids, "cloud", 4*time.Minute)
	load.Stop()
	time.Sleep(2 * time.Second)
	if err := c.stop(); err != nil {
		t.Errorf("controller: %v", err)
	}
	log.check(t)
	st, err = r.Store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for id, mv := range st.Moves {
		if mv.InFlight() {
			t.Errorf("%s: move left in flight in the state: %+v", id, mv)
		}
	}
	assertFleetExactlyOnce(t, r)
}

// TestPlacementDrainCommand: `ftwin-migrate drain HOST` (the CLI, its own process) moves two
// twins under load off fog2 and prints its summary; `uncordon` lifts the cordon.
func TestPlacementDrainCommand(t *testing.T) {
	twins := []placestate.Twin{fleet.Spec("tw0", "fog2"), fleet.Spec("tw1", "fog2")}
	r := startFleet(t, "10.240.14.0/24", broker.Embedded, twins)
	cliBin := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(placementPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	labArgs := []string{"--name", r.Lab.Name, "--base-dir", filepath.Dir(r.Lab.Dir)}
	time.Sleep(2 * time.Second)
	out, err := exec.Command(cliBin, append(append([]string{"drain"}, labArgs...), "--policy", pol, "--concurrency", "2", "fog2")...).CombinedOutput()
	t.Logf("drain:\n%s", out)
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	for _, want := range []string{"TWIN", "STREAM GAP", "tw0", "tw1", "committed", "fog2 is cordoned and holds no twin"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the drain's output lacks %q", want)
		}
	}
	where, err := r.Locate(context.Background(), []string{"tw0", "tw1"})
	if err != nil {
		t.Fatal(err)
	}
	if where["tw0"] != "cloud" || where["tw1"] != "cloud" {
		t.Errorf("after the drain: %v", where)
	}
	if out, err := exec.Command(cliBin, append(append([]string{"uncordon"}, labArgs...), "fog2")...).CombinedOutput(); err != nil {
		t.Fatalf("uncordon: %v\n%s", err, out)
	}
	st, err := r.Store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Cordons) != 0 {
		t.Errorf("cordons after uncordon: %v", st.Cordons)
	}
	assertFleetExactlyOnce(t, r)
}

// loadFog1UntilDecided waits 4 s, puts CPU load on fog1 and waits for decided to close (the
// controller's first decision), failing the test after 2 min. The load runs until Stop.
func loadFog1UntilDecided(t *testing.T, r *fleet.Running, decided <-chan struct{}, who string) *fleet.Load {
	t.Helper()
	time.Sleep(4 * time.Second)
	fog1, _ := r.Lab.Host("fog1")
	load, err := fleet.StartLoad(fog1, 2)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-decided:
	case <-time.After(2 * time.Minute):
		load.Stop()
		t.Fatalf("%s decided nothing in 2 min of load", who)
	}
	return load
}
