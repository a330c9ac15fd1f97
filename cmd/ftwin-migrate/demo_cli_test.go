package main

import (
	"encoding/json"
	"testing"

	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

// TestDemo: `ftwin-migrate demo --json` (the main job, on kfake) migrates the twin twice with
// nothing lost or duplicated and no rebalance, and prints the documented JSON.
func TestDemo(t *testing.T) {
	requireLabTools(t)
	cliBin, _ := binaries(t)
	twin := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/test/workloads/twin")
	l := &cliLab{t: t, bin: cliBin, name: labName()}
	t.Cleanup(func() { l.run("lab", "down", "--name", l.name) })
	r := l.run("demo", "--json", "--twin", twin, "--state-mib", "16", "--dwell", "1s", "--name", l.name, "--subnet", "10.231.25.0/24")
	if r.code != 0 {
		t.Fatal(r)
	}
	var res scenario.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("demo --json: %v\n%s", err, r)
	}
	if len(res.Migrations) != 2 || res.Migrations[0].From != "cloud" || res.Migrations[0].To != "fog" || res.Migrations[1].To != "cloud" {
		t.Errorf("migrations %+v: want cloud→fog→cloud", res.Migrations)
	}
	for _, m := range res.Migrations {
		if m.Result != "committed" || m.DowntimeMs <= 0 || m.StreamGapMs <= 0 || !m.BoundaryChecked {
			t.Errorf("migration %+v", m)
		}
	}
	if res.EventsIn == 0 || res.EventsOut != res.EventsIn || res.Lost != 0 || res.Duplicated != 0 || res.Rebalances != 0 {
		t.Errorf("demo result: in %d out %d lost %d dup %d rebalances %d", res.EventsIn, res.EventsOut, res.Lost, res.Duplicated, res.Rebalances)
	}
}
