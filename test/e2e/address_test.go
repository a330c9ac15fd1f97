package e2e

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
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
	l := upTwoHosts(t, ctx, "10.231.77.0/24")
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

	firstTick, lastTick := srv.oneConnectionInOrder(t)
	t.Logf("the peer received ticks %d–%d on one connection", firstTick, lastTick)

	l.downClean(t, ctx)
}

// TestMigrateKeepsTCP: the same through the migration pipeline and the agents: the migrator
// finds the container's own address (lab.Host.Network), takes it off the source's network
// before the dump, the target's agent recreates and announces it after the restore, and the
// connection carries on (--tcp established by default for such a container), cloud→fog→cloud;
// the probe reaches the container at its own address from the target host.
func TestMigrateKeepsTCP(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	srv := newLineServer(t, ml.BridgeIP+":0")
	const id = "talker"
	if err := cloud.Run(context.Background(), lab.Workload{ID: id, Binary: ml.bin, OwnAddress: true,
		Args: []string{"-mem-mib", "8", "-interval", "50ms", "-listen", ":8080", "-connect", srv.ln.Addr().String()}}); err != nil {
		t.Fatal(err)
	}
	const addr = "10.231.30.100"
	first := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= 5 })
	for _, hop := range []struct{ from, to *lab.Host }{{cloud, fog}, {fog, cloud}} {
		before := lastState(t, hop.from, id)
		rep, err := ml.migrate(t, hop.from, hop.to, id, func(o *migrate.Options) {
			o.Network = hop.from.Network()
			o.Probe = "http://" + addr + ":8080/healthz"
		})
		if err != nil {
			t.Fatalf("migrate %s→%s: %v", hop.from.Name, hop.to.Name, err)
		}
		after := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= before.Tick+20 })
		t.Logf("migrate %s→%s: downtime %v, phases %v; connection %s carries on", hop.from.Name, hop.to.Name, rep.Downtime, rep.Phases, after.PeerLocal)
		if after.StartNS != first.StartNS || after.Reconnects != 0 || after.PeerLocal != first.PeerLocal || !after.MemOK {
			t.Errorf("after the migration to %s the workload sends %+v; want the same process on the same connection (%s), no reconnect", hop.to.Name, after, first.PeerLocal)
		}
		if _, err := os.Stat("/run/netns/" + hop.from.ContainerNetNS(id)); !os.IsNotExist(err) {
			t.Errorf("the source's network namespace of %s is still there after the commit (%v)", id, err)
		}
	}
	srv.oneConnectionInOrder(t)
}

// TestMigrateKeepsTCPOnRollback: a restore that fails on the target rolls back: the source's
// address comes back on its network (announced again), the source thaws, and its connection
// carries on as if nothing happened; the target keeps no network namespace of the container.
func TestMigrateKeepsTCPOnRollback(t *testing.T) {
	ml := newMigrationLab(t, map[string]func(*agent.Config){"fog": failRestore})
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	srv := newLineServer(t, ml.BridgeIP+":0")
	const id = "talker"
	if err := cloud.Run(context.Background(), lab.Workload{ID: id, Binary: ml.bin, OwnAddress: true,
		Args: []string{"-mem-mib", "8", "-interval", "50ms", "-connect", srv.ln.Addr().String()}}); err != nil {
		t.Fatal(err)
	}
	const addr = "10.231.30.100"
	first := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= 5 })
	rep, err := ml.migrate(t, cloud, fog, id, func(o *migrate.Options) { o.Network = cloud.Network() })
	if err == nil {
		t.Fatal("the migration succeeded; want the injected restore failure")
	}
	t.Logf("failed as injected: %v; undo %v", err, rep.Undo)
	before := lastState(t, cloud, id)
	after := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= before.Tick+20 })
	if after.StartNS != first.StartNS || after.Reconnects != 0 || after.PeerLocal != first.PeerLocal {
		t.Errorf("after the rollback the workload sends %+v; want the source on the same connection (%s), no reconnect", after, first.PeerLocal)
	}
	if _, err := os.Stat("/run/netns/" + fog.ContainerNetNS(id)); !os.IsNotExist(err) {
		t.Errorf("the target kept a network namespace of %s after the rollback (%v)", id, err)
	}
	srv.oneConnectionInOrder(t)
}

// TestKafkaClientKeepsConnections: a Kafka client (the twin without hooks: frozen as it is,
// mid-stream, its transaction open) with an address of its own is migrated cloud→fog→cloud; its
// connections to the broker are the same ones afterwards (same local ports: no reconnect), and
// every event is processed exactly once with no rebalance.
func TestKafkaClientKeepsConnections(t *testing.T) {
	s := startTwin(t, broker.Embedded, "10.231.79.0/24", []string{"cloud", "fog"}, func(c *scenario.Config) {
		c.TwinArgs = []string{"-hook-socket", ""}
		c.OwnAddress = true
	})
	ctx := context.Background()
	broker := s.Brokers[0]
	toBroker := func(h *lab.Host) []string {
		conns, err := h.ContainerConnections(ctx, scenario.ContainerID)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range conns {
			if strings.HasSuffix(c, " "+broker) {
				out = append(out, c)
			}
		}
		slices.Sort(out)
		return out
	}
	time.Sleep(2 * time.Second)
	before := toBroker(s.Lab.Hosts[0])
	if len(before) == 0 {
		t.Fatalf("the twin has no connection to the broker %s", broker)
	}
	for _, to := range []string{"fog", "cloud"} {
		m := s.Migrate(ctx, to)
		if m.Err != nil {
			t.Fatalf("migrate %s→%s: %v", m.From, m.To, m.Err)
		}
		if m.Report.TCP != "established" || m.Report.Address == nil {
			t.Errorf("migration %s→%s: tcp %q, address %v: want established, its own address", m.From, m.To, m.Report.TCP, m.Report.Address)
		}
		time.Sleep(2 * time.Second)
		h, _ := s.Lab.Host(to)
		if after := toBroker(h); !slices.Equal(after, before) {
			t.Errorf("after the move to %s the twin's broker connections are %v, were %v: it reconnected", to, after, before)
		} else {
			t.Logf("after the move to %s (downtime %v) the same %d broker connections: %v", to, m.Report.Downtime, len(after), after)
		}
	}
	res := finish(t, s)
	assertExactlyOnce(t, res)
	if res.Rebalances != 0 {
		t.Errorf("the group rebalanced %d times", res.Rebalances)
	}
}
