package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
)

// TestClocksAcrossHosts: the lab's hosts have clocks of their own (time namespaces an hour
// apart). A workload ticking once a second, moved to a host whose monotonic clock is an hour
// behind, ticks on at once and on time (without CRIU's clock record it would wait an hour), and
// so does a process exec'd into it afterwards (it sees the container's clock, not the host's);
// moved to a host an hour ahead it fires no burst of ticks; the lab tears down cleanly
// afterwards (runc's recorded start times are in the hosts' clocks).
func TestClocksAcrossHosts(t *testing.T) {
	requireLabTools(t)
	if _, err := os.Stat("/proc/self/ns/time"); err != nil {
		t.Fatalf("this kernel has no time namespaces (%v): the lab's hosts cannot have clocks of their own", err)
	}
	bin := buildCounter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := upTwoHosts(t, ctx, "10.231.75.0/24")
	cloud, fog := l.Hosts[0], l.Hosts[1]
	if got, want := fog.Clock.Monotonic-cloud.Clock.Monotonic, time.Hour; got != want {
		t.Fatalf("fog's monotonic clock is %v ahead of cloud's, want %v (lab.HostClock)", got, want)
	}

	const id = "ticker"
	if err := fog.Run(ctx, lab.Workload{ID: id, Binary: bin, Args: []string{"-mem-mib", "4", "-interval", "1s"}}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*lab.Host{cloud, fog} {
		if _, err := h.ImportImage(ctx, lab.Workload{Binary: bin}); err != nil {
			t.Fatal(err)
		}
	}
	first := waitState(t, fog.LogPath(id), func(s state.State) bool { return s.Tick >= 3 })
	// The container sees its host's clock: fog's offset ahead of this process's.
	if ahead := time.Duration(first.MonoNS - monotonicAt(first.NowNS)); ahead < fog.Clock.Monotonic-time.Minute || ahead > fog.Clock.Monotonic+time.Minute {
		t.Fatalf("the workload on fog sees CLOCK_MONOTONIC %v ahead of the machine's, want about %v", ahead, fog.Clock.Monotonic)
	}
	checkExecClock(t, ctx, fog, id, "before any move")

	hops := []struct {
		from, to *lab.Host
		what     string
	}{
		{fog, cloud, "to a host an hour behind"},
		{cloud, fog, "to a host an hour ahead"},
	}
	for _, hop := range hops {
		rep, err := lab.Move(ctx, hop.from, hop.to, id)
		if err != nil {
			t.Fatalf("move %s: %v", hop.what, err)
		}
		moved := time.Now()
		// The source's log is complete once it was dumped (its task exits).
		src := allStates(t, hop.from.LogPath(id))
		last := src[len(src)-1]
		// Six ticks on the target, as fast as the clock allows: a workload waiting for its
		// own clock to catch up an hour would print none.
		after := waitState(t, hop.to.LogPath(id), func(s state.State) bool { return s.Tick >= last.Tick+6 })
		took := time.Since(moved)
		t.Logf("move %s: downtime %v; 6 ticks on %s within %v", hop.what, rep.Downtime, hop.to.Name, took)
		var ticks []state.State
		for _, s := range allStates(t, hop.to.LogPath(id)) {
			if s.StartNS == last.StartNS && s.Tick > last.Tick {
				ticks = append(ticks, s)
			}
		}
		if len(ticks) == 0 || ticks[0].Tick != last.Tick+1 {
			t.Fatalf("move %s: the restored workload does not continue at tick %d: %+v", hop.what, last.Tick+1, ticks)
		}
		// The monotonic clock continues: across the move it advanced as much as the wall clock.
		mono, wall := time.Duration(ticks[0].MonoNS-last.MonoNS), time.Duration(ticks[0].NowNS-last.NowNS)
		if d := mono - wall; d < -time.Second || d > time.Second {
			t.Errorf("move %s: CLOCK_MONOTONIC advanced %v across the move while the wall clock advanced %v: the clock jumped %v", hop.what, mono, wall, d)
		}
		// On time, and no burst: the first tick after the restore comes when the frozen ticker
		// was due (at most a second plus the downtime after the last), and consecutive ticks
		// are a second apart, not bunched (a clock an hour ahead must not fire an hour's ticks).
		if wall > time.Second+rep.Downtime+time.Second {
			t.Errorf("move %s: the first tick after the restore came %v after the last before it (downtime %v)", hop.what, wall, rep.Downtime)
		}
		for i := 1; i < len(ticks); i++ {
			gap := time.Duration(ticks[i].NowNS - ticks[i-1].NowNS)
			if gap < 500*time.Millisecond || gap > 2*time.Second { // wide: a loaded CI machine runs timers late
				t.Errorf("move %s: ticks %d and %d are %v apart, want 1s", hop.what, ticks[i-1].Tick, ticks[i].Tick, gap)
			}
		}
		if after.StartNS != first.StartNS || !after.MemOK {
			t.Errorf("move %s: state %+v does not continue %+v", hop.what, after, first)
		}
		checkExecClock(t, ctx, hop.to, id, "after the move "+hop.what)
	}

	l.downClean(t, ctx)
}

// checkExecClock execs `counter -print-clock` in the container and checks it reads the same
// CLOCK_MONOTONIC as the container's own process (its latest state line, advanced by the wall
// time since): an exec'd process that landed in the host's time namespace instead would be off
// by the difference between the container's clock and the host's.
func checkExecClock(t *testing.T, ctx context.Context, h *lab.Host, id, when string) {
	t.Helper()
	out, err := h.Exec(ctx, id, "/bin/counter", "-print-clock")
	if err != nil {
		t.Fatalf("%s: exec in %s on %s: %v", when, id, h.Name, err)
	}
	var got state.State
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &got); err != nil || got.MonoNS == 0 {
		t.Fatalf("%s: exec printed %q: want a clock line (%v)", when, out, err)
	}
	states := allStates(t, h.LogPath(id))
	last := states[len(states)-1]
	want := last.MonoNS + (got.NowNS - last.NowNS)
	if d := time.Duration(got.MonoNS - want); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("%s: a process exec'd into %s on %s reads CLOCK_MONOTONIC %v off the container's own (host clock offset %v): it is not in the container's time namespace",
			when, id, h.Name, d, h.Clock.Monotonic)
	} else {
		t.Logf("%s: exec'd process's CLOCK_MONOTONIC within %v of the container's", when, d)
	}
}

// monotonicAt is this process's CLOCK_MONOTONIC, in ns, at Unix time unixNS (near now).
func monotonicAt(unixNS int64) int64 {
	return monotonicNow() - (time.Now().UnixNano() - unixNS)
}

func monotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
