package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
)

// TestOwnAddressKeepsTCP: a container with an address of its own on the lab network (its own
// network namespace, as a CNI bridge gives one) keeps an established TCP connection across
// moves cloud→fog→cloud: the address and MAC move with it and are announced on the target, CRIU
// restores the connection established, and the peer sees one connection, every line once and in
// order, and no reconnect.
func TestOwnAddressKeepsTCP(t *testing.T) {
	requireLabTools(t)
	bin := buildCounter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := t.TempDir()
	name := labName(t)
	l, err := lab.Up(ctx, lab.Config{Name: name, BaseDir: base, Hosts: []string{"cloud", "fog"}, Subnet: "10.231.77.0/24"})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			_ = l.Down(context.Background())
		}
	})
	cloud, fog := l.Hosts[0], l.Hosts[1]
	srv := newLineServer(t, l.BridgeIP+":0")

	const id = "talker"
	if err := cloud.Run(ctx, lab.Workload{ID: id, Binary: bin, OwnAddress: true,
		Args: []string{"-mem-mib", "8", "-interval", "50ms", "-connect", srv.ln.Addr().String()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fog.ImportImage(ctx, lab.Workload{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	const addr = "10.231.77.100" // the lowest container address of the lab
	first := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= 5 })
	if !strings.HasPrefix(first.PeerLocal, addr+":") {
		t.Fatalf("the container talks from %q, want its own address %s", first.PeerLocal, addr)
	}

	for _, hop := range []struct{ from, to *lab.Host }{{cloud, fog}, {fog, cloud}} {
		before := lastState(t, hop.from, id)
		rep, err := lab.Move(ctx, hop.from, hop.to, id)
		if err != nil {
			t.Fatalf("move %s→%s: %v", hop.from.Name, hop.to.Name, err)
		}
		after := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= before.Tick+20 })
		t.Logf("move %s→%s: downtime %v; connection %s carries on", hop.from.Name, hop.to.Name, rep.Downtime, after.PeerLocal)
		if after.StartNS != first.StartNS || after.Reconnects != 0 || after.PeerLocal != first.PeerLocal || !after.MemOK {
			t.Errorf("after the move to %s the workload sends %+v; want the same process (start %d) on the same connection (%s), no reconnect",
				hop.to.Name, after, first.StartNS, first.PeerLocal)
		}
	}

	srv.mu.Lock()
	accepts, lines := srv.accepts, append([]sentLine(nil), srv.lines...)
	srv.mu.Unlock()
	if accepts != 1 {
		t.Errorf("the peer accepted %d connections, want 1 (no reconnect across the moves)", accepts)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i].s.Tick != lines[i-1].s.Tick+1 {
			t.Errorf("the peer received tick %d after tick %d: a line lost or repeated across a move", lines[i].s.Tick, lines[i-1].s.Tick)
		}
	}
	t.Logf("the peer received ticks %d–%d on one connection", lines[0].s.Tick, lines[len(lines)-1].s.Tick)

	if err := l.Down(ctx); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	downed = true
	if left := lab.Find(base, name); !left.Empty() {
		t.Fatalf("lab down left %s", left)
	}
}
