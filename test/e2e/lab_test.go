// Package e2e holds end-to-end tests on the lab: real containerd daemons in their own network
// and mount namespaces, real runc and CRIU. They need root and the tools hack/install.sh
// installs; they skip only when those are truly absent.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
)

// requireLabTools skips the test unless it can bring up a lab (root, network namespaces,
// containerd, CRIU).
func requireLabTools(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "containerd", "runc", "criu", "ip")
}

// buildCounter compiles the stateful test workload as a static binary.
func buildCounter(t *testing.T) string { return testbin.Build(t, testbin.Counter) }

func labName(t *testing.T) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// testLab is a lab of the test's own: hosts cloud and fog, no broker.
type testLab struct {
	*lab.Lab
	base, name string
	downed     bool
}

// upTwoHosts brings up a testLab on subnet ("": the default). It is taken down at the end of
// the test unless the test does it itself with downClean.
func upTwoHosts(t *testing.T, ctx context.Context, subnet string) *testLab {
	t.Helper()
	tl := &testLab{base: t.TempDir(), name: labName(t)}
	l, err := lab.Up(ctx, lab.Config{Name: tl.name, BaseDir: tl.base, Hosts: []string{"cloud", "fog"}, Subnet: subnet})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	tl.Lab = l
	t.Cleanup(func() {
		if !tl.downed {
			_ = l.Down(context.Background())
		}
	})
	return tl
}

// downClean takes the lab down and fails the test if anything of it is left.
func (tl *testLab) downClean(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := tl.Down(ctx); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	tl.downed = true
	if left := lab.Find(tl.base, tl.name); !left.Empty() {
		t.Fatalf("lab down left %s", left)
	}
}

// waitState polls a workload log until ok accepts its last state.
func waitState(t *testing.T, path string, ok func(state.State) bool) state.State {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last state.State
	var err error
	for time.Now().Before(deadline) {
		if last, err = state.Last(path); err == nil && ok(last) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("workload log %s: condition not met in 30s; last state %+v (err %v)", path, last, err)
	return last
}

func allStates(t *testing.T, path string) []state.State {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := state.ParseLines(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return s
}

// TestCheckpointRestoreAcrossHosts: lab up, run the counter on one host, checkpoint it through
// containerd (CRIU), restore it in the other host's containerd, and back; the workload
// continues from its state each time; lab down leaves nothing.
func TestCheckpointRestoreAcrossHosts(t *testing.T) {
	requireLabTools(t)
	bin := buildCounter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := upTwoHosts(t, ctx, "")
	cloud, fog := l.Hosts[0], l.Hosts[1]

	const id = "counter"
	if err := cloud.Run(ctx, lab.Workload{ID: id, Binary: bin, Args: []string{"-mem-mib", "32", "-interval", "50ms"}}); err != nil {
		t.Fatal(err)
	}
	// The image must be on the target before a restore (package transfer sends only the checkpoint).
	if _, err := fog.ImportImage(ctx, lab.Workload{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	first := waitState(t, cloud.LogPath(id), func(s state.State) bool { return s.Tick >= 5 })
	if !first.MemOK {
		t.Fatalf("workload reports corrupt memory before any checkpoint: %+v", first)
	}

	hops := []struct{ from, to *lab.Host }{{cloud, fog}, {fog, cloud}}
	for _, hop := range hops {
		rep, err := lab.Move(ctx, hop.from, hop.to, id)
		if err != nil {
			t.Fatalf("move %s→%s: %v", hop.from.Name, hop.to.Name, err)
		}
		t.Logf("move %s→%s: checkpoint %v, transfer %+v, restore %v, downtime %v",
			hop.from.Name, hop.to.Name, rep.Checkpoint, rep.Transfer, rep.Restore, rep.Downtime)
		if rep.Transfer.BlobsSent == 0 || rep.Transfer.BlobsSkipped == 0 {
			t.Errorf("transfer sent %d blobs and skipped %d: want the checkpoint sent and the base image skipped",
				rep.Transfer.BlobsSent, rep.Transfer.BlobsSkipped)
		}
		srcStates := allStates(t, hop.from.LogPath(id))
		lastSrc := srcStates[len(srcStates)-1]
		// Continuity: the restored process prints the tick after the last one the source printed,
		// from the same process start and the same memory.
		next := waitState(t, hop.to.LogPath(id), func(s state.State) bool { return s.Tick > lastSrc.Tick+3 })
		var firstAfter *state.State
		for _, s := range allStates(t, hop.to.LogPath(id)) {
			if s.Tick > lastSrc.Tick && s.StartNS == lastSrc.StartNS {
				s := s
				firstAfter = &s
				break
			}
		}
		if firstAfter == nil {
			t.Fatalf("%s: no state continuing the source's (start_ns %d) after tick %d; last %+v",
				hop.to.Name, lastSrc.StartNS, lastSrc.Tick, next)
		}
		if firstAfter.Tick != lastSrc.Tick+1 {
			t.Errorf("%s: first tick after restore %d, want %d (source's last + 1)", hop.to.Name, firstAfter.Tick, lastSrc.Tick+1)
		}
		if next.StartNS != first.StartNS || !next.MemOK || next.Checksum == "" {
			t.Errorf("%s: state after restore %+v does not continue %+v with intact memory", hop.to.Name, next, first)
		}
		if got := containers(t, hop.from); len(got) != 0 {
			t.Errorf("source %s still has containers %v after the move", hop.from.Name, got)
		}
	}

	l.downClean(t, ctx)
}

func containers(t *testing.T, h *lab.Host) []string {
	t.Helper()
	c, err := h.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cs, err := c.Containers(lab.Context(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range cs {
		ids = append(ids, x.ID())
	}
	return ids
}
