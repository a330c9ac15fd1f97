package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
)

// lineServer collects the state lines workloads send it, with the address they came from.
type lineServer struct {
	ln      net.Listener
	mu      sync.Mutex
	lines   []sentLine
	accepts int // connections accepted
}

type sentLine struct {
	from string // remote IP
	s    state.State
}

func newLineServer(t *testing.T, addr string) *lineServer {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ls := &lineServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ls.mu.Lock()
			ls.accepts++
			ls.mu.Unlock()
			go func() {
				defer c.Close()
				ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var s state.State
					if json.Unmarshal(sc.Bytes(), &s) == nil {
						ls.mu.Lock()
						ls.lines = append(ls.lines, sentLine{ip, s})
						ls.mu.Unlock()
					}
				}
			}()
		}
	}()
	return ls
}

// oneConnectionInOrder fails the test unless the server accepted exactly one connection and
// received every tick on it once, in order; it returns the first and last tick.
func (ls *lineServer) oneConnectionInOrder(t *testing.T) (first, last uint64) {
	t.Helper()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.accepts != 1 {
		t.Errorf("the peer accepted %d connections, want 1: the workload reconnected", ls.accepts)
	}
	for i := 1; i < len(ls.lines); i++ {
		if ls.lines[i].s.Tick != ls.lines[i-1].s.Tick+1 {
			t.Errorf("the peer received tick %d after tick %d: a line lost or repeated", ls.lines[i].s.Tick, ls.lines[i-1].s.Tick)
		}
	}
	if len(ls.lines) == 0 {
		t.Fatal("the peer received nothing")
	}
	return ls.lines[0].s.Tick, ls.lines[len(ls.lines)-1].s.Tick
}

func (ls *lineServer) waitFrom(t *testing.T, ip string, ok func(state.State) bool) state.State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ls.mu.Lock()
		for _, l := range ls.lines {
			if l.from == ip && ok(l.s) {
				ls.mu.Unlock()
				return l.s
			}
		}
		ls.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no state line from %s matched within 20s", ip)
	return state.State{}
}

// TestMigrateReconnects: a workload with an established TCP connection is migrated to a host
// with another address; the connection is restored closed (CRIU tcp-close), the workload gets
// an error on its next write and reconnects from the target's address, continuing its state.
func TestMigrateReconnects(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	srv := newLineServer(t, ml.BridgeIP+":0")
	const id = "twin"
	ml.run(t, cloud, id, "-connect", srv.ln.Addr().String())
	first := srv.waitFrom(t, cloud.IP, func(s state.State) bool { return s.Tick >= 3 })

	rep, err := ml.migrate(t, cloud, fog, id)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	after := srv.waitFrom(t, fog.IP, func(s state.State) bool { return s.StartNS == first.StartNS && s.Reconnects >= 1 })
	if !strings.HasPrefix(after.PeerLocal, fog.IP+":") || !after.MemOK {
		t.Errorf("after the migration the workload sends %+v; want it connected from %s with intact memory", after, fog.IP)
	}
	continues(t, fog, id, lastState(t, cloud, id))
	t.Logf("reconnected from %s after a downtime of %v", after.PeerLocal, rep.Downtime)
}

// TestPhaseTimeout: a phase that outlives its timeout rolls the migration back.
func TestPhaseTimeout(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "twin"
	ml.run(t, cloud, id)
	before := lastState(t, cloud, id)
	rep, err := ml.migrate(t, cloud, fog, id, func(o *migrate.Options) { o.PhaseTimeout = 3 * time.Second },
		onBlobPut(func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
			select { // a link that stalls
			case <-r.Context().Done():
				return nil, r.Context().Err()
			case <-time.After(time.Minute):
				return nil, errors.New("stalled link never gave up")
			}
		}))
	rolledBackAt(t, rep, err, migrate.Transfer, "phase timeout 3s")
	assertSourceIntact(t, ml, cloud, id, before)
}
