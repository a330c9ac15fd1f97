package e2e

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

// soakSample is what the migrator and the agents (all in this process) hold after a move.
type soakSample struct {
	goroutines, fds int
	heapMiB         float64
	diskMiB         float64 // the agents' work directories
}

func sampleSoak(t *testing.T, s *scenario.Scenario) soakSample {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, _ := os.ReadDir("/proc/self/fd")
	var disk int64
	for _, h := range s.Lab.Hosts {
		_ = filepath.WalkDir(filepath.Join(h.Dir, "agent"), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && d.Name() != filepath.Base(h.LogPath("twin")) {
				if fi, err := d.Info(); err == nil {
					disk += fi.Size()
				}
			}
			return nil
		})
	}
	return soakSample{goroutines: runtime.NumGoroutine(), fds: len(fds), heapMiB: float64(ms.HeapInuse) / (1 << 20), diskMiB: float64(disk) / (1 << 20)}
}

// TestSoak moves the twin back and forth under load, FTWIN_SOAK times (default 6; `make soak`
// runs 100), on Apache Kafka (kfake would keep the whole changelog in this process's memory):
// every event exactly once, and nothing the migrator or the agents hold grows from the first
// moves to the last.
func TestSoak(t *testing.T) {
	testutil.RequireRoot(t, "containerd", "runc", "criu", "ip")
	n := 6
	if v := os.Getenv("FTWIN_SOAK"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 4 {
			t.Fatalf("FTWIN_SOAK=%q: want a number of migrations, at least 4", v)
		}
	}
	kinds := brokerKinds(t)
	if kinds[0] != broker.Apache {
		t.Fatal("the soak needs Apache Kafka: run `make install`")
	}
	s := startTwin(t, broker.Apache, "10.231.66.0/24", []string{"cloud", "fog"}, func(c *scenario.Config) { c.StateMiB = 16 })
	ctx := context.Background()
	hosts := []string{"cloud", "fog"}
	var samples []soakSample
	for i := range n {
		mctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		m := s.Migrate(mctx, hosts[(i+1)%2])
		cancel()
		if m.Err != nil {
			t.Fatalf("migration %d of %d: %v", i+1, n, m.Err)
		}
		samples = append(samples, sampleSoak(t, s))
	}
	res := finish(t, s)
	assertExactlyOnce(t, res)
	if res.Rebalances != 0 {
		t.Errorf("%d rebalances", res.Rebalances)
	}
	// The first moves warm up (connections, caches): compare the medians of the second and
	// the last quarter.
	k := max(2, n/4)
	early, late := samples[1:1+k], samples[n-k:]
	median := func(xs []soakSample, f func(soakSample) float64) float64 {
		vs := make([]float64, len(xs))
		for i, x := range xs {
			vs[i] = f(x)
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	for _, c := range []struct {
		what  string
		f     func(soakSample) float64
		limit float64
	}{
		{"goroutines", func(x soakSample) float64 { return float64(x.goroutines) }, 10},
		{"open file descriptors", func(x soakSample) float64 { return float64(x.fds) }, 10},
		{"heap in use (MiB)", func(x soakSample) float64 { return x.heapMiB }, 32},
		{"agents' disk use (MiB)", func(x soakSample) float64 { return x.diskMiB }, 16},
	} {
		a, b := median(early, c.f), median(late, c.f)
		t.Logf("%s: %.1f after the first moves, %.1f after the last", c.what, a, b)
		if b-a > c.limit {
			t.Errorf("%s grew from %.1f to %.1f over %d migrations (more than %.0f)", c.what, a, b, n, c.limit)
			if c.what == "goroutines" {
				var buf strings.Builder
				_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
				t.Logf("goroutines now:\n%s", buf.String())
			}
		}
	}
	for name, a := range s.Agents() {
		if ids := a.Sessions(); len(ids) != 0 {
			t.Errorf("agent of %s still holds sessions %v", name, ids)
		}
	}
}
