package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	api "github.com/ftwin-migrate/ftwin-migrate/api/services/migrate/v1"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/netmove"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
)

func testPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, []pki.Host{{Name: "node1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, {Name: "node2"}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// loadSection reads TOML as containerd's config.toml and returns the plugin's section.
func loadServerConfig(t *testing.T, text string) *srvconfig.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte("version = 3\nroot = \"/var/lib/containerd\"\n"+text), 0o644); err != nil {
		t.Fatal(err)
	}
	var c srvconfig.Config
	if err := srvconfig.LoadConfig(context.Background(), p, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestCheckServerConfig: the plugin's section of containerd's config.toml is decoded strictly
// and validated; each bad one is refused naming its key and what it wants, a good one and a
// configuration that disables the plugin pass.
func TestCheckServerConfig(t *testing.T) {
	dir := testPKI(t)
	fakeTools(t, "ip")
	head := fmt.Sprintf("[plugins.%q]\n  host = \"node1\"\n  pki = %q\n", URI, dir)
	recv := fmt.Sprintf("[plugins.%q.receive]\n", URI)
	netw := fmt.Sprintf("[plugins.%q.network]\n", URI)
	for _, tc := range []struct {
		name, text string
		want       []string // empty: accepted
	}{
		{"good", head + recv + "  listen = \":7443\"\n  session_timeout = \"1m\"\n  heartbeat_timeout = \"20s\"\n  cgroup_parent = \"/ftwin\"\n  namespaces = [\"default\", \"k8s.io\"]\n  allow_host_namespaces = [\"network\", \"uts\"]\n  allow_bind_mounts = [\"/data\"]\n  allow_capabilities = [\"CAP_NET_ADMIN\"]\n", nil},
		{"no receive", head, nil},
		{"disabled", "disabled_plugins = [\"" + URI + "\"]\n" + fmt.Sprintf("[plugins.%q]\n  nonsense = 1\n", URI), nil},
		{"unknown key", head + "  recieve = \"x\"\n", []string{"unknown key", "recieve"}},
		{"unknown receive key", head + recv + "  listen_on = \":1\"\n", []string{"unknown key", "receive.listen_on"}},
		{"wrong type", head + recv + "  allow_devices = \"yes\"\n", []string{"receive.allow_devices"}},
		{"bad duration", head + recv + "  session_timeout = \"soon\"\n", []string{"receive.session_timeout", "not a duration"}},
		{"negative duration", head + recv + "  heartbeat_timeout = \"-1s\"\n", []string{"receive.heartbeat_timeout", "positive"}},
		{"listen without port", head + recv + "  listen = \"10.0.0.1\"\n", []string{"receive.listen", "host:port"}},
		{"host namespace", head + recv + "  allow_host_namespaces = [\"mount\"]\n", []string{"receive.allow_host_namespaces", "mount"}},
		{"relative bind mount", head + recv + "  allow_bind_mounts = [\"data\"]\n", []string{"receive.allow_bind_mounts", "absolute"}},
		{"capability", head + recv + "  allow_capabilities = [\"net_admin\"]\n", []string{"receive.allow_capabilities", "CAP_NET_ADMIN"}},
		{"namespace", head + recv + "  namespaces = [\"Not OK\"]\n", []string{"receive.namespaces"}},
		{"relative work dir", head + "  work_dir = \"state\"\n", []string{"work_dir", "absolute"}},
		{"relative cgroup", head + recv + "  cgroup_parent = \"ftwin\"\n", []string{"receive.cgroup_parent"}},
		{"no certificate", fmt.Sprintf("[plugins.%q]\n  host = \"node3\"\n  pki = %q\n", URI, dir), []string{"pki", "node3", "certs init"}},
		{"network", head + netw + "  bridge = \"br0\"\n  host_netns = \"ftl-lab-cloud\"\n  netns_prefix = \"ftl-lab-cloud.\"\n", nil},
		{"network, bridge only", head + netw + "  bridge = \"ftbr-shared.10\"\n", nil},
		{"network off", head + netw + "  bridge = \"\"\n", nil},
		{"unknown network key", head + netw + "  brige = \"br0\"\n", []string{"unknown key", "network.brige", "network.bridge"}},
		{"bridge name too long", head + netw + "  bridge = \"bridge-of-sixteen\"\n", []string{"network.bridge", "interface name", "15 bytes"}},
		{"bridge name with a slash", head + netw + "  bridge = \"br/0\"\n", []string{"network.bridge", "interface name"}},
		{"bridge name with a space", head + netw + "  bridge = \"br 0\"\n", []string{"network.bridge", "interface name"}},
		{"bridge wrong type", head + netw + "  bridge = 0\n", []string{"network.bridge"}},
		{"host netns path", head + netw + "  bridge = \"br0\"\n  host_netns = \"/run/netns/host\"\n", []string{"network.host_netns", "under /run/netns"}},
		{"host netns dot", head + netw + "  bridge = \"br0\"\n  host_netns = \"..\"\n", []string{"network.host_netns"}},
		{"netns prefix slash", head + netw + "  bridge = \"br0\"\n  netns_prefix = \"lab/\"\n", []string{"network.netns_prefix", "no '/'"}},
		{"netns prefix too long", head + netw + "  bridge = \"br0\"\n  netns_prefix = \"" + strings.Repeat("p", 180) + "\"\n", []string{"network.netns_prefix", "at most 179 bytes"}},
		{"host netns without bridge", head + netw + "  host_netns = \"hostns\"\n", []string{"network.host_netns", "without network.bridge"}},
		{"netns prefix without bridge", head + netw + "  netns_prefix = \"x-\"\n", []string{"network.netns_prefix", "without network.bridge"}},
		{"no pki", fmt.Sprintf("[plugins.%q]\n  host = \"node1\"\n  pki = \"/nonexistent\"\n", URI), []string{"pki", "/nonexistent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckServerConfig(loadServerConfig(t, tc.text))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.text)
			}
			for _, w := range append(tc.want, URI) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
		})
	}
}

// fakeTools puts executables named tools, and nothing else, on PATH for the test.
func fakeTools(t *testing.T, tools ...string) {
	t.Helper()
	dir := t.TempDir()
	for _, tool := range tools {
		if err := os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
}

// TestNetworkTools: moving addresses needs ip(8) on containerd's PATH; without it the
// network section is refused, naming the tool.
func TestNetworkTools(t *testing.T) {
	for _, tc := range []struct {
		name  string
		have  []string
		n     NetworkConfig
		wants []string // empty: accepted
	}{
		{"no ip", nil, NetworkConfig{Bridge: "br0"}, []string{"network.bridge", "runs ip(8)", "PATH"}},
		{"ip", []string{"ip"}, NetworkConfig{Bridge: "br0"}, nil},
		{"off: nothing needed", nil, NetworkConfig{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakeTools(t, tc.have...)
			err := errors.Join(tc.n.validate()...)
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			for _, w := range tc.wants {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not say %q", err, w)
				}
			}
		})
	}
}

// TestNetworkBridge: the network section becomes netmove's Bridge on both sides — the
// pipeline's Options.Network and the receive role's agent Config.Network — or none when no
// bridge is named; the plugin, being containerd, mounts and reads namespaces in its own mount
// namespace (no DaemonPid).
func TestNetworkBridge(t *testing.T) {
	c := Config{Host: "node1", PKI: testPKI(t), WorkDir: "/w"}
	if a := AgentConfig(c, nil); a.Network != nil {
		t.Errorf("no network section, yet the receive role moves addresses: %#v", a.Network)
	}
	s := &Service{cfg: c}
	req := &api.MigrateRequest{ContainerId: "twin", Target: "10.0.0.2:7443"}
	if o, err := s.options("ftwin", req); err != nil || o.Network != nil {
		t.Errorf("no network section: options %v, network %#v: want none", err, o.Network)
	}

	c.Network = NetworkConfig{Bridge: "br0", HostNetNS: "hostns", NetNSPrefix: "ftl-lab-fog."}
	a := AgentConfig(c, nil)
	b, ok := a.Network.(netmove.Bridge)
	if !ok || b.Name != "br0" || b.HostNetNS != "hostns" || b.NetNSPath("twin") != "/run/netns/ftl-lab-fog.twin" || b.DaemonPid != nil {
		t.Errorf("receive role's network: %#v", a.Network)
	}
	s.cfg = c
	o, err := s.options("ftwin", req)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := o.Network.(netmove.Bridge); !ok || b.Name != "br0" || b.NetNS("twin") != "ftl-lab-fog.twin" || b.DaemonPid != nil {
		t.Errorf("migration's network: %#v", o.Network)
	}
	if o.TCP != "" {
		t.Errorf("tcp %q: want the pipeline's default (established for a container with an address of its own)", o.TCP)
	}
	if b := (NetworkConfig{Bridge: "br0"}).bridge(); b.NetNS("twin") != "ftwin-twin" {
		t.Errorf("default prefix: %s", b.NetNS("twin"))
	}
}

// TestConfigDefaultsAndAgent: the defaults, and the agent configuration the receive section
// makes.
func TestConfigDefaultsAndAgent(t *testing.T) {
	c := Config{}.withDefaults("/var/lib/containerd/" + URI)
	if c.PKI != DefaultPKI || c.WorkDir != "/var/lib/containerd/"+URI || c.Host == "" {
		t.Errorf("defaults: %+v", c)
	}
	c = Config{Host: "fog", PKI: "/p", WorkDir: "/w", Receive: ReceiveConfig{Listen: ":7443", SessionTimeout: Duration(time.Minute),
		CgroupParent: "/lab/fog", LogDir: "/logs", Namespaces: []string{"ftwin"}, AllowHostNamespaces: []string{"network"}, AllowDevices: true}}
	a := AgentConfig(c, nil)
	if a.Host != "fog" || a.WorkDir != "/w/receive" || a.SessionTimeout != time.Minute || len(a.Namespaces) != 1 ||
		len(a.Policy.HostNamespaces) != 1 || a.Policy.HostNamespaces[0] != "network" || !a.Policy.Devices {
		t.Errorf("agent config: %+v", a)
	}
	if got := a.LogPath("ftwin", "twin"); got != "/logs/twin.log" {
		t.Errorf("log path %s", got)
	}
	if opts := a.RestoreOpts(agentRequest("ftwin", "twin")); len(opts) != 1 {
		t.Errorf("restore options %v: want the cgroup path", opts)
	}
	// The section round-trips through its TOML form, as the lab writes it.
	text, err := c.SectionTOML()
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Plugins map[string]Config `toml:"plugins"`
	}
	if err := toml.Unmarshal([]byte(text), &back); err != nil {
		t.Fatalf("%v:\n%s", err, text)
	}
	if got := back.Plugins[URI]; got.Receive.SessionTimeout != c.Receive.SessionTimeout || got.Receive.Listen != ":7443" || got.Host != "fog" {
		t.Errorf("round trip: %+v\n%s", got, text)
	}
}

// TestMigrationErrorCodes: how a migration ended decides its gRPC status code, as containerd
// maps errdefs: a clean rollback is ABORTED unless its cause has a class of its own, one that
// needs Recover is INTERNAL, and the client maps the codes back.
func TestMigrationErrorCodes(t *testing.T) {
	phaseErr := &migrate.PhaseError{Phase: migrate.Restore, Err: errors.New("runc said no")}
	for _, tc := range []struct {
		name   string
		err    error
		result string
		want   codes.Code
		native error
	}{
		{"committed", nil, migrate.Committed, codes.OK, nil},
		{"rolled back", phaseErr, migrate.RolledBack, codes.Aborted, errdefs.ErrAborted},
		{"rolled back, container not found", &migrate.PhaseError{Phase: migrate.Preflight, Err: fmt.Errorf("container x: %w", errdefs.ErrNotFound)}, migrate.RolledBack, codes.NotFound, errdefs.ErrNotFound},
		{"rolled back, phase timeout", &migrate.PhaseError{Phase: migrate.Transfer, Err: fmt.Errorf("send: %w", context.DeadlineExceeded)}, migrate.RolledBack, codes.DeadlineExceeded, context.DeadlineExceeded},
		{"rolled back, client gone", &migrate.PhaseError{Phase: migrate.Transfer, Err: context.Canceled}, migrate.RolledBack, codes.Canceled, context.Canceled},
		{"rollback failed", phaseErr, migrate.RollbackFailed, codes.Internal, errdefs.ErrInternal},
		{"commit unconfirmed", errors.New("commit: lost"), migrate.CommitUnconfirmed, codes.Internal, errdefs.ErrInternal},
		{"bad request", invalid("target %q", "x"), "", codes.InvalidArgument, errdefs.ErrInvalidArgument},
		{"unclassified, no report", errors.New("boom"), "", codes.Unknown, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rep *migrate.Report
			if tc.result != "" {
				rep = &migrate.Report{Result: tc.result}
			}
			got := toGRPC(migrationError(tc.err, rep))
			if c := status.Code(got); c != tc.want {
				t.Fatalf("code %v (%v), want %v", c, got, tc.want)
			}
			if tc.err != nil && !strings.Contains(status.Convert(got).Message(), tc.err.Error()) {
				t.Errorf("message %q lost the cause %q", status.Convert(got).Message(), tc.err)
			}
			if tc.native != nil && !errors.Is(errgrpc.ToNative(got), tc.native) {
				t.Errorf("back on the client: %v, want it to be %v", errgrpc.ToNative(got), tc.native)
			}
		})
	}
}

// TestOptions: a request becomes the pipeline's options with the CLI's defaults and
// meanings; what is malformed is refused with INVALID_ARGUMENT; Request is its inverse for
// what a request carries.
func TestOptions(t *testing.T) {
	s := &Service{cfg: Config{Host: "node1", PKI: testPKI(t), WorkDir: "/w"}}
	good := func() *api.MigrateRequest {
		return &api.MigrateRequest{ContainerId: "twin", Target: "10.0.0.2:7443", Brokers: []string{"k:9092"}}
	}
	o, err := s.options("ftwin", good())
	if err != nil {
		t.Fatal(err)
	}
	if o.Namespace != "ftwin" || o.SourceHost != "node1" || o.TLS == nil || o.TCP != "" || o.HookMode != migrate.HookAuto ||
		o.HookSocket != migrate.DefaultHookSocket || o.Mode != migrate.ModeStopAndCopy || o.Settle != 0 || o.MaxLag != 0 || o.WorkDir != "/w/dumps" {
		t.Errorf("defaults: %+v", o)
	}
	r := good()
	r.Settle, r.MaxLag, r.PhaseTimeout, r.Mode, r.Hook, r.Tcp = durationpb.New(0), new(int64), durationpb.New(time.Minute), "replay", "required", "established"
	if o, err = s.options("ftwin", r); err != nil {
		t.Fatal(err)
	}
	if o.Settle != -1 || o.MaxLag != -1 || o.PhaseTimeout != time.Minute || o.Mode != migrate.ModeReplay || o.HookMode != migrate.HookRequired || o.TCP != restore.TCPEstablished {
		t.Errorf("zeroes and choices: %+v", o)
	}
	back := Request(o, "")
	if back.Settle.AsDuration() != 0 || back.GetMaxLag() != 0 || back.MaxLag == nil || back.Mode != "replay" || back.Hook != "required" ||
		back.Tcp != "established" || back.PhaseTimeout.AsDuration() != time.Minute || back.Target != r.Target {
		t.Errorf("Request(options) = %+v", back)
	}
	for _, tc := range []struct {
		name string
		edit func(*api.MigrateRequest)
		want string
	}{
		{"no container", func(r *api.MigrateRequest) { r.ContainerId = "" }, "container_id"},
		{"bad container", func(r *api.MigrateRequest) { r.ContainerId = "a/b" }, "container_id"},
		{"target without port", func(r *api.MigrateRequest) { r.Target = "fog" }, "target"},
		{"tcp", func(r *api.MigrateRequest) { r.Tcp = "keep" }, "tcp"},
		{"hook", func(r *api.MigrateRequest) { r.Hook = "maybe" }, "hook"},
		{"hook socket", func(r *api.MigrateRequest) { r.HookSocket = "relative.sock" }, "hook_socket"},
		{"mode", func(r *api.MigrateRequest) { r.Mode = "teleport" }, "mode"},
		{"phase timeout", func(r *api.MigrateRequest) { r.PhaseTimeout = durationpb.New(0) }, "phase_timeout"},
		{"settle", func(r *api.MigrateRequest) { r.Settle = durationpb.New(-time.Second) }, "settle"},
		{"max lag", func(r *api.MigrateRequest) { v := int64(-1); r.MaxLag = &v }, "max_lag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.edit(r)
			_, err := s.options("ftwin", r)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: want INVALID_ARGUMENT naming %s", err, tc.want)
			}
			if status.Code(toGRPC(err)) != codes.InvalidArgument {
				t.Errorf("code %v", status.Code(toGRPC(err)))
			}
		})
	}
	// The plugin's own PKI must hold its certificate.
	s.cfg.Host = "node9"
	if _, err := s.options("ftwin", good()); err == nil || !strings.Contains(err.Error(), "node9") {
		t.Errorf("options without this node's certificate: %v", err)
	}
}

func agentRequest(ns, id string) agent.SessionRequest {
	return agent.SessionRequest{Namespace: ns, Container: id}
}

// TestCheckServerConfigDefaultRoot: a config.toml without root (containerd's default) gets the
// default work_dir under /var/lib/containerd; containerd's defaults alone (no file) are
// checked too, and fail only for what is missing (the default PKI), naming it.
func TestCheckServerConfigDefaultRoot(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("version = 3\n[plugins.%q]\n  host = \"node1\"\n  pki = %q\n", URI, testPKI(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	var c srvconfig.Config
	if err := srvconfig.LoadConfig(context.Background(), p, &c); err != nil {
		t.Fatal(err)
	}
	if err := CheckServerConfig(&c); err != nil {
		t.Errorf("no root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(DefaultPKI, "ca.crt")); err == nil {
		t.Skip("this machine has a PKI in " + DefaultPKI)
	}
	err := CheckServerConfig(&srvconfig.Config{})
	if err == nil || !strings.Contains(err.Error(), "pki: "+DefaultPKI) || strings.Contains(err.Error(), "work_dir") {
		t.Errorf("containerd's defaults: %v", err)
	}
}
