package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/fleet"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
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

func startFleet(t *testing.T, subnet string, twins []placestate.Twin) *fleet.Running {
	t.Helper()
	requireLabTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := fleet.UpConfig{
		Lab:   lab.Config{Name: "q" + labName(t)[1:], BaseDir: t.TempDir(), Hosts: []string{"cloud", "fog1", "fog2"}, Subnet: subnet, Broker: broker.Embedded},
		Twins: twins, Twin: fleet.TwinConfig{Binary: testbin.Build(t, twinPkg), StateMiB: 16, Devices: 8}, Rate: 40,
	}
	r, err := fleet.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("bring up the fleet: %v", err)
	}
	t.Cleanup(func() {
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
	r := startFleet(t, "10.240.10.0/24", twins)
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
