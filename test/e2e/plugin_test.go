package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	api "github.com/ftwin-migrate/ftwin-migrate/api/services/migrate/v1"
	"github.com/ftwin-migrate/ftwin-migrate/ctrd"
	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/plugin"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

const pluginDaemonPkg = "github.com/ftwin-migrate/ftwin-migrate/cmd/containerd-ftwin"

func pluginLabName() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "p" + hex.EncodeToString(b[:])
}

// grpcMigration is one migration driven by a plain gRPC client: what it streamed and how the
// call ended.
type grpcMigration struct {
	phases []string // "NAME start" and "NAME done", in the order streamed
	report *api.Report
	rep    *migrate.Report // report.json decoded, the CLI's report
	status *status.Status
}

// migrateOverSocket asks the plugin on containerd's socket sock to migrate, with nothing but
// grpc and the generated stub: the namespace in the metadata header as for any containerd
// service, the events read to the end of the stream.
func migrateOverSocket(ctx context.Context, t *testing.T, sock string, req *api.MigrateRequest) grpcMigration {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", lab.Namespace)
	stream, err := api.NewMigrateClient(conn).Migrate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var m grpcMigration
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			m.status = status.New(codes.OK, "")
			break
		}
		if err != nil {
			m.status = status.Convert(err)
			break
		}
		if m.report != nil {
			t.Errorf("event after the report: %v", ev)
		}
		switch e := ev.Event.(type) {
		case *api.MigrateEvent_Phase:
			m.phases = append(m.phases, e.Phase.Name+map[bool]string{false: " start", true: " done"}[e.Phase.Done])
		case *api.MigrateEvent_Report:
			m.report = e.Report
		}
	}
	if m.report == nil {
		t.Fatalf("the stream ended (%v) without a report", m.status)
	}
	m.rep = &migrate.Report{}
	if err := json.Unmarshal(m.report.Json, m.rep); err != nil {
		t.Fatalf("the report's json: %v", err)
	}
	return m
}

// plainGRPCMigrator is the scenario's Migrator through the source's containerd socket only.
func plainGRPCMigrator(t *testing.T, runs *[]grpcMigration) func(ctx context.Context, from *lab.Host, o migrate.Options) (*migrate.Report, error) {
	return func(ctx context.Context, from *lab.Host, o migrate.Options) (*migrate.Report, error) {
		m := migrateOverSocket(ctx, t, from.Address(), &api.MigrateRequest{
			ContainerId: o.Container, Target: o.Target, Brokers: o.Brokers, PhaseTimeout: durationpb.New(2 * time.Minute),
		})
		*runs = append(*runs, m)
		return m.rep, m.status.Err()
	}
}

// TestPluginTwin: on a lab whose hosts run containerd-ftwin (containerd with the plugin, which
// also serves each host's receive endpoint: no agent process, no migrator process), the twin
// migrates cloud→fog→cloud under load driven entirely by a plain gRPC client on the source's
// containerd socket: the phases stream, the report is the CLI's, every event is processed
// exactly once with no rebalance. A migration to a host whose plugin refuses the twin's spec at
// the restore rolls back as the CLI path does (ABORTED, the source resumes, nothing left on the
// target), still exactly once.
func TestPluginTwin(t *testing.T) {
	requireLabTools(t)
	daemon := testbin.Build(t, pluginDaemonPkg)
	kind := brokerKinds(t)[0]
	var runs []grpcMigration
	var cli string // set: the next migration goes through `ftwin-migrate migrate --via-containerd`
	grpcMigrator := plainGRPCMigrator(t, &runs)
	s := startTwin(t, kind, "10.240.1.0/24", []string{"cloud", "fog", "edge"}, func(c *scenario.Config) {
		c.Lab.Name = pluginLabName()
		c.Lab.Plugin, c.Lab.Daemon = true, daemon
		// edge's plugin lets restored containers have no host namespace: the twin, on its
		// host's network, is refused there at the restore, after its dump and transfer.
		c.Lab.PluginEdit = func(host string, pc *plugin.Config) {
			if host == "edge" {
				pc.Receive.AllowHostNamespaces = nil
			}
		}
		c.Migrator = func(ctx context.Context, from *lab.Host, o migrate.Options) (*migrate.Report, error) {
			if cli == "" {
				return grpcMigrator(ctx, from, o)
			}
			out, err := exec.CommandContext(ctx, cli, "--address", from.Address(), "--namespace", o.Namespace, "migrate", "--via-containerd",
				"--to", o.Target, "--brokers", strings.Join(o.Brokers, ","), "--json", o.Container).Output()
			var rep migrate.Report
			if jerr := json.Unmarshal(out, &rep); jerr != nil {
				return nil, fmt.Errorf("the CLI's report: %v (%v)\n%s", jerr, err, out)
			}
			return &rep, err
		}
	})
	if len(s.Agents()) != 0 {
		t.Fatalf("in-process agents run on a plugin lab: %v", s.Agents())
	}
	ctx := context.Background()

	// Each daemon says who it is and where it receives.
	for _, h := range s.Lab.Hosts {
		conn, err := plugin.Dial(h.Address())
		if err != nil {
			t.Fatal(err)
		}
		info, err := api.NewMigrateClient(conn).Info(ctx, &api.InfoRequest{})
		conn.Close()
		if err != nil || info.Host != h.Name || info.ReceiveAddress != h.AgentAddr() {
			t.Fatalf("Info of %s: %v, %v: want host %s receiving on %s", h.Name, info, err, h.Name, h.AgentAddr())
		}
	}

	wantPhases := []string{}
	for _, p := range []migrate.Phase{migrate.Preflight, migrate.Quiesce, migrate.Checkpoint, migrate.Transfer, migrate.Restore, migrate.Resume, migrate.Verify, migrate.Commit} {
		wantPhases = append(wantPhases, string(p)+" start", string(p)+" done")
	}
	for i, to := range []string{"fog", "cloud"} {
		time.Sleep(time.Second)
		m := s.Migrate(ctx, to)
		if m.Err != nil {
			t.Fatalf("migrate %s→%s through the plugin: %v", m.From, m.To, m.Err)
		}
		g := runs[len(runs)-1]
		if !slices.Equal(g.phases, wantPhases) {
			t.Errorf("migration %d streamed phases %v, want %v", i, g.phases, wantPhases)
		}
		if g.report.Result != migrate.Committed || g.rep.Result != migrate.Committed || g.rep.Target == nil || g.rep.Target.Host != to ||
			g.rep.From != m.From || g.report.Downtime.AsDuration() != g.rep.Downtime || len(g.report.Phases) != len(g.rep.Phases) {
			t.Errorf("migration %d report: %+v / %+v", i, g.report, g.rep)
		}
		if g.rep.BoundaryCheck == nil || !g.rep.BoundaryCheck.CommittedBefore {
			t.Errorf("migration %d: the boundary was not checked against the broker: %+v", i, g.rep.BoundaryCheck)
		}
		var took []string
		for _, p := range g.rep.Phases {
			took = append(took, fmt.Sprintf("%s %v", p.Name, p.Duration.Round(time.Millisecond)))
		}
		t.Logf("%s→%s through the plugin: downtime %v, total %v, %d bytes; %s", m.From, m.To, g.rep.Downtime, g.rep.Total, g.rep.Transfer.BytesSent, strings.Join(took, ", "))
	}

	t.Run("rollback", func(t *testing.T) {
		time.Sleep(time.Second)
		m := s.Migrate(ctx, "edge")
		if m.Err == nil {
			t.Fatal("the migration to edge, whose policy refuses the twin, succeeded")
		}
		g := runs[len(runs)-1]
		if g.status.Code() != codes.Aborted {
			t.Errorf("status %v: want ABORTED (rolled back cleanly)", g.status)
		}
		if g.rep.Result != migrate.RolledBack || !strings.Contains(g.rep.Error, "policy refuses") {
			t.Errorf("report: result %q, error %q: want rolled back by the policy", g.rep.Result, g.rep.Error)
		}
		last := g.rep.Phases[len(g.rep.Phases)-1]
		failed := g.rep.Phases[len(g.rep.Phases)-2]
		if last.Name != migrate.Rollback || last.Error != "" || failed.Name != migrate.Restore || failed.Error == "" {
			t.Errorf("phases %+v: want restore failed, then a clean rollback", g.rep.Phases)
		}
		var undone []string
		for _, u := range g.rep.Undo {
			if u.Error != "" && !u.BestEffort {
				t.Errorf("undo %s failed: %s", u.Name, u.Error)
			}
			undone = append(undone, u.Name)
		}
		t.Logf("undos: %v", undone)
		if s.At() != "cloud" {
			t.Fatalf("after the rollback the twin is on %s", s.At())
		}
		edge, _ := s.Lab.Host("edge")
		if ids := containers(t, edge); len(ids) != 0 {
			t.Errorf("edge holds %v after the rollback", ids)
		}
		if err := s.WaitProcessing(ctx, 30*time.Second); err != nil {
			t.Error(err)
		}
	})

	t.Run("client gone", func(t *testing.T) {
		// A client that goes away mid-migration cancels it: the daemon rolls back on its own,
		// as the CLI does when interrupted.
		cloud, _ := s.Lab.Host("cloud")
		fog, _ := s.Lab.Host("fog")
		time.Sleep(time.Second)
		conn, err := plugin.Dial(cloud.Address())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "containerd-namespace", lab.Namespace))
		defer cancel()
		stream, err := api.NewMigrateClient(conn).Migrate(cctx, &api.MigrateRequest{ContainerId: scenario.ContainerID, Target: fog.AgentAddr(), Brokers: s.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		for {
			ev, err := stream.Recv()
			if err != nil {
				if status.Code(err) != codes.Canceled {
					t.Errorf("the cancelled call ended with %v, want CANCELED", err)
				}
				break
			}
			if p := ev.GetPhase(); p != nil && p.Name == string(migrate.Transfer) && !p.Done {
				cancel() // the source is frozen and its checkpoint on its way
			}
			if ev.GetReport() != nil {
				t.Fatalf("the migration ended (%s) before the client went away", ev.GetReport().Result)
			}
		}
		client, err := cloud.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		lctx := lab.Context(ctx)
		deadline := time.Now().Add(time.Minute)
		for {
			c, err := client.LoadContainer(lctx, scenario.ContainerID)
			var st containerd.Status
			var labels map[string]string
			if err == nil {
				labels, _ = c.Labels(lctx)
				if task, terr := c.Task(lctx, nil); terr == nil {
					st, _ = task.Status(lctx)
				}
			}
			if st.Status == containerd.Running && labels[migrate.MigratingLabel] == "" && len(containers(t, fog)) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a minute after the client went away: source %v (labels %v, %v), fog holds %v", st.Status, labels, err, containers(t, fog))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := s.WaitProcessing(ctx, 30*time.Second); err != nil {
			t.Error(err)
		}
	})

	// The CLI drives the same service: `ftwin-migrate migrate --via-containerd` on the
	// source's socket prints the report it streamed.
	cli = testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
	time.Sleep(time.Second)
	m := s.Migrate(ctx, "fog")
	if m.Err != nil || m.Report == nil || m.Report.Result != migrate.Committed || m.Report.Target == nil || m.Report.Target.Host != "fog" {
		t.Fatalf("ftwin-migrate migrate --via-containerd cloud→fog: %v, report %+v", m.Err, m.Report)
	}
	t.Logf("cloud→fog through the CLI and the plugin: downtime %v", m.Report.Downtime)

	time.Sleep(2 * time.Second)
	res := finish(t, s)
	assertExactlyOnce(t, res)
	if res.Rebalances != 0 {
		t.Errorf("the group rebalanced %d times", res.Rebalances)
	}
}

// TestPluginOwnAddress: on a lab whose hosts run containerd-ftwin with the network section
// Host.PluginConfig fills (the hosts' bridge br0, the lab's namespace names), a container with
// an address of its own keeps one established TCP connection across cloud→fog→cloud driven
// through the source's containerd socket alone — cloud→fog with the generated gRPC stub,
// fog→cloud with plugin.Migrate: the source's plugin takes the address off its network, the
// target's recreates it with the same MAC and announces it, the probe reaches the container
// at its own address from the target, and the peer receives every line once and in order on
// its one connection. The lab's own tools, which run beside the daemons' mount namespaces,
// work on every namespace wherever it was made: the one `lab run --own-address` made from this
// process, and the ones the plugins made (ContainerConnections reads them through the
// daemon's mount namespace); the source's is gone after each commit, and the lab comes down
// with nothing left.
func TestPluginOwnAddress(t *testing.T) {
	requireLabTools(t)
	daemon := testbin.Build(t, pluginDaemonPkg)
	bin := buildCounter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	base, name := t.TempDir(), pluginLabName()
	l, err := lab.Up(ctx, lab.Config{Name: name, BaseDir: base, Hosts: []string{"cloud", "fog"}, Subnet: "10.240.35.0/24",
		Plugin: true, Daemon: daemon})
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
		Args: []string{"-mem-mib", "8", "-interval", "50ms", "-listen", ":8080", "-connect", srv.ln.Addr().String()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fog.ImportImage(ctx, lab.Workload{Binary: bin}); err != nil {
		t.Fatal(err)
	}
	const addr = "10.240.35.100" // the lowest container address of the lab
	first := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= 5 })
	if !strings.HasPrefix(first.PeerLocal, addr+":") {
		t.Fatalf("the container talks from %q, want its own address %s", first.PeerLocal, addr)
	}
	// The connection as ss(8) shows it in the container's namespace: "LOCAL PEER".
	conn := first.PeerLocal + " " + srv.ln.Addr().String()
	seenOn := func(h *lab.Host) {
		t.Helper()
		conns, err := h.ContainerConnections(ctx, id)
		if err != nil || !slices.Contains(conns, conn) {
			t.Errorf("the lab's tools see connections %v (%v) of %s on %s, want %q", conns, err, id, h.Name, conn)
		}
	}
	seenOn(cloud)

	for i, hop := range []struct{ from, to *lab.Host }{{cloud, fog}, {fog, cloud}} {
		before := lastState(t, hop.from, id)
		req := &api.MigrateRequest{ContainerId: id, Target: hop.to.AgentAddr(), Probe: "http://" + addr + ":8080/healthz",
			PhaseTimeout: durationpb.New(2 * time.Minute)}
		var rep *migrate.Report
		if i == 0 {
			m := migrateOverSocket(ctx, t, hop.from.Address(), req)
			if err := m.status.Err(); err != nil {
				t.Fatalf("migrate %s→%s through the plugin: %v (report %+v)", hop.from.Name, hop.to.Name, err, m.rep)
			}
			rep = m.rep
		} else {
			cc, err := plugin.Dial(hop.from.Address())
			if err != nil {
				t.Fatal(err)
			}
			rep, err = plugin.Migrate(namespaces.WithNamespace(ctx, lab.Namespace), cc, req, nil)
			cc.Close()
			if err != nil {
				t.Fatalf("migrate %s→%s with plugin.Migrate: %v (report %+v)", hop.from.Name, hop.to.Name, err, rep)
			}
		}
		if rep.Result != migrate.Committed || rep.TCP != "established" || rep.Address == nil || rep.Address.IP != addr+"/24" ||
			rep.Target == nil || rep.Target.Host != hop.to.Name {
			t.Errorf("migration %s→%s: result %q, tcp %q, address %+v, target %+v: want committed to %s, its own address %s/24 moved, established",
				hop.from.Name, hop.to.Name, rep.Result, rep.TCP, rep.Address, rep.Target, hop.to.Name, addr)
		}
		after := srv.waitFrom(t, addr, func(s state.State) bool { return s.Tick >= before.Tick+20 })
		t.Logf("%s→%s through the plugin: downtime %v, total %v; connection %s carries on", hop.from.Name, hop.to.Name, rep.Downtime, rep.Total, after.PeerLocal)
		if after.StartNS != first.StartNS || after.Reconnects != 0 || after.PeerLocal != first.PeerLocal || !after.MemOK {
			t.Errorf("after the migration to %s the workload sends %+v; want the same process (start %d) on the same connection (%s), no reconnect",
				hop.to.Name, after, first.StartNS, first.PeerLocal)
		}
		if _, err := os.Stat("/run/netns/" + hop.from.ContainerNetNS(id)); !os.IsNotExist(err) {
			t.Errorf("the source's network namespace of %s is still there after the commit (%v)", id, err)
		}
		if ids := containers(t, hop.from); len(ids) != 0 {
			t.Errorf("%s still holds %v after the commit", hop.from.Name, ids)
		}
		seenOn(hop.to)
	}

	firstTick, lastTick := srv.oneConnectionInOrder(t)
	t.Logf("the peer received ticks %d–%d on one connection", firstTick, lastTick)

	if err := l.Down(ctx); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	downed = true
	if left := lab.Find(base, name); !left.Empty() {
		t.Fatalf("lab down left %s", left)
	}
}

// TestPluginConfigRefused: containerd-ftwin reads the plugin's section of config.toml and
// refuses to start on a bad one, saying which key and why; a good one starts and the plugin
// answers on the daemon's socket.
func TestPluginConfigRefused(t *testing.T) {
	requireLabTools(t)
	daemon := testbin.Build(t, pluginDaemonPkg)
	pkiDir := t.TempDir()
	if err := pki.Init(pkiDir, []pki.Host{{Name: "node1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}}); err != nil {
		t.Fatal(err)
	}
	section := func(body string) string {
		return "\n[plugins.\"" + plugin.URI + "\"]\n  host = \"node1\"\n  pki = \"" + pkiDir + "\"\n" + body
	}
	for _, tc := range []struct {
		name, extra string
		want        []string
	}{
		{"unknown key", section("  recieve_listen = \":7443\"\n"), []string{"unknown key", "recieve_listen"}},
		{"bad policy", section("  [plugins.\"" + plugin.URI + "\".receive]\n    listen = \"127.0.0.1:0\"\n    allow_host_namespaces = [\"mount\"]\n"),
			[]string{"receive.allow_host_namespaces", `"mount"`}},
		{"bad listen", section("  [plugins.\"" + plugin.URI + "\".receive]\n    listen = \"7443\"\n"), []string{"receive.listen", "host:port"}},
		{"bad duration", section("  [plugins.\"" + plugin.URI + "\".receive]\n    session_timeout = \"two minutes\"\n"), []string{"session_timeout", "not a duration"}},
		{"bad bridge", section("  [plugins.\"" + plugin.URI + "\".network]\n    bridge = \"br/0\"\n"), []string{"network.bridge", "interface name"}},
		{"no certificate", "\n[plugins.\"" + plugin.URI + "\"]\n  host = \"node2\"\n  pki = \"" + pkiDir + "\"\n", []string{"pki", "node2", "certs init"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dir := shortDir(t)
			d, err := ctrd.Start(ctx, ctrd.Config{Dir: dir, Binary: daemon, ExtraConfig: tc.extra})
			if err == nil {
				_ = d.Stop(ctx)
				t.Fatalf("the daemon started with config\n%s", tc.extra)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if !strings.Contains(err.Error(), "exited during startup") {
				t.Errorf("want the daemon to exit at start: %v", err)
			}
			_ = ctrd.Kill(ctx, dir)
		})
	}

	t.Run("good", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dir := shortDir(t)
		d, err := ctrd.Start(ctx, ctrd.Config{Dir: dir, Binary: daemon,
			ExtraConfig: section("  [plugins.\"" + plugin.URI + "\".receive]\n    listen = \"127.0.0.1:0\"\n    session_timeout = \"1m\"\n")})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = d.Stop(context.Background()) }()
		conn, err := plugin.Dial(d.Address())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		info, err := api.NewMigrateClient(conn).Info(ctx, &api.InfoRequest{})
		if err != nil || info.Host != "node1" || !strings.HasPrefix(info.ReceiveAddress, "127.0.0.1:") {
			t.Fatalf("Info: %v, %v", info, err)
		}
		// Without the namespace header, as containerd's own services, the call is refused.
		_, err = api.NewMigrateClient(conn).Recover(ctx, &api.RecoverRequest{ContainerId: "x"})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("Recover without a namespace: %v, want FAILED_PRECONDITION", err)
		}
		// A container that does not exist is NOT_FOUND, as containerd says it.
		nctx := metadata.AppendToOutgoingContext(ctx, "containerd-namespace", "default")
		_, err = api.NewMigrateClient(conn).Recover(nctx, &api.RecoverRequest{ContainerId: "nothere"})
		if status.Code(err) != codes.NotFound {
			t.Errorf("Recover of a container that does not exist: %v, want NOT_FOUND", err)
		}
		// The CLI's recover asks the same service.
		cli := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
		out, err := exec.Command(cli, "--address", d.Address(), "recover", "--via-containerd", "nothere").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not found") || !strings.Contains(string(out), plugin.URI) {
			t.Errorf("recover --via-containerd of a container that does not exist: %v\n%s", err, out)
		}
		// A malformed request is INVALID_ARGUMENT, before anything happens.
		_, err = migrateStreamErr(nctx, conn, &api.MigrateRequest{ContainerId: "nothere", Target: "no-port"})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Migrate to %q: %v, want INVALID_ARGUMENT", "no-port", err)
		}
	})
}

// migrateStreamErr calls Migrate and returns the call's final error.
func migrateStreamErr(ctx context.Context, conn *grpc.ClientConn, req *api.MigrateRequest) ([]*api.MigrateEvent, error) {
	stream, err := api.NewMigrateClient(conn).Migrate(ctx, req)
	if err != nil {
		return nil, err
	}
	var evs []*api.MigrateEvent
	for {
		ev, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return evs, err
		}
		evs = append(evs, ev)
	}
}

// shortDir is a daemon directory, killed and unmounted before it is removed.
func shortDir(t *testing.T) string {
	d := t.TempDir()
	t.Cleanup(func() { _ = ctrd.Kill(context.Background(), d) })
	return d
}
