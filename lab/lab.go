// Package lab brings up simulated cloud and fog hosts on one machine, on real components.
//
// Each host has its own network namespace (a veth to a bridge the lab shares, with an address
// of its own), its own mount namespace and its own containerd daemon (see package ctrd). A Kafka
// broker every host reaches listens on the bridge's address: franz-go's kfake in process, or a
// real Apache Kafka broker (see package broker). A host's link can be throttled to model a fog
// uplink (tc tbf; this kernel has no netem).
//
// Teardown works from names and paths alone, so it removes the leftovers of a crashed run as
// well as a live lab: network namespaces ftl-NAME-*, links ftb-NAME and ftv-NAME-*, processes
// whose command line names the lab's directory (daemons, shims, brokers), container processes
// recorded in the hosts' runc state, mounts and the directory itself.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/ctrd"
	"github.com/ftwin-migrate/ftwin-migrate/doctor"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/plugin"
)

// DefaultBaseDir holds one directory per lab.
const DefaultBaseDir = "/var/lib/ftwin-lab"

// BrokerPort is the Kafka port on the bridge address.
const BrokerPort = 9092

// Config describes a lab. The zero value is a lab "ftwin" with hosts "cloud" and "fog" and no broker.
type Config struct {
	// Name identifies the lab: 1 to 8 characters of [a-z0-9] (it becomes part of interface names).
	Name string
	// Hosts names the simulated hosts (1 to 20), for example "cloud", "fog". Default: cloud, fog.
	Hosts []string
	// BaseDir is the parent of the lab's directory. Default DefaultBaseDir.
	BaseDir string
	// Subnet is the lab's IPv4 /24: the bridge takes .1, host i takes .(11+i). Default 10.231.0.0/24.
	Subnet string
	// Broker selects the Kafka broker: broker.None, broker.Embedded or broker.Apache.
	Broker broker.Kind
	// UplinkMbit, when positive, throttles every host's link to that rate in both directions.
	UplinkMbit int
	// SharedClock puts every host on the machine's clocks. By default each host runs in a
	// time namespace of its own, as real machines have uptimes of their own: host i's
	// CLOCK_MONOTONIC is HostClock(i).Monotonic ahead of the machine's (one day plus i hours)
	// and its CLOCK_BOOTTIME HostClock(i).Boottime, so a move from host i to host j crosses
	// (j-i) hours of monotonic time, which CRIU carries (it restores the process into a time
	// namespace of its own whose clocks continue the source's). Without time namespaces in the
	// kernel the hosts share the machine's clocks whatever this says.
	SharedClock bool
	// DaemonEnv is added to every containerd's environment. When nil the lab probes hardware
	// breakpoints and adds CRIU_FAULT=130 where they do not work (see doctor.CRIUFaultEnv).
	DaemonEnv []string
	// Plugin runs every host's containerd as PluginDaemon, containerd with the ftwin-migrate
	// plugin (package plugin): migration is then served on each host's containerd socket, and
	// the host's receive endpoint by its daemon on HOSTIP:AgentPort (Host.PluginConfig), so no
	// in-process agent is started for it. Up creates the lab's PKI in DIR/pki for the daemons.
	Plugin bool
	// Daemon is the daemon to run, a name on PATH or a path. Default "containerd", or
	// PluginDaemon when Plugin is set.
	Daemon string
	// PluginEdit changes a host's plugin configuration before its daemon starts (Plugin only;
	// tests make one restrictive, or bad).
	PluginEdit func(host string, c *plugin.Config)
}

// Lab is a running lab.
type Lab struct {
	Name     string  `json:"name"`
	Dir      string  `json:"dir"`
	Bridge   string  `json:"bridge"`
	BridgeIP string  `json:"bridge_ip"`
	Hosts    []*Host `json:"hosts"`
	// BrokerKind and BrokerAddr describe the broker (empty kind: none).
	BrokerKind broker.Kind `json:"broker_kind"`
	BrokerAddr string      `json:"broker_addr,omitempty"`
	DaemonEnv  []string    `json:"daemon_env,omitempty"`
	// Plugin: the hosts run PluginDaemon, with the PKI in PKIDir (Config.Plugin).
	Plugin bool   `json:"plugin,omitempty"`
	PKIDir string `json:"pki_dir,omitempty"`

	broker broker.Broker
}

// Host is one simulated host.
type Host struct {
	Name  string `json:"name"`
	IP    string `json:"ip"`
	NetNS string `json:"netns"` // name under /run/netns
	Veth  string `json:"veth"`  // root-namespace end of the host's link
	Dir   string `json:"dir"`   // the containerd daemon's directory (see package ctrd)
	// Clock is how far the host's clocks are ahead of the machine's (zero: the same clocks).
	Clock ctrd.ClockOffsets `json:"clock"`
	lab   string
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,8}$`)
var hostRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,15}$`)

func (c *Config) withDefaults() error {
	if c.Name == "" {
		c.Name = "ftwin"
	}
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("lab: name %q: want 1 to 8 characters of [a-z0-9]", c.Name)
	}
	if len(c.Hosts) == 0 {
		c.Hosts = []string{"cloud", "fog"}
	}
	if len(c.Hosts) > 20 {
		return fmt.Errorf("lab: %d hosts requested: at most 20", len(c.Hosts))
	}
	seen := map[string]bool{}
	for _, h := range c.Hosts {
		if !hostRE.MatchString(h) {
			return fmt.Errorf("lab: host name %q: want [a-z0-9-], at most 16 characters", h)
		}
		if seen[h] {
			return fmt.Errorf("lab: host name %q given twice", h)
		}
		seen[h] = true
	}
	if c.BaseDir == "" {
		c.BaseDir = DefaultBaseDir
	}
	if c.Subnet == "" {
		c.Subnet = "10.231.0.0/24"
	}
	if c.Broker == "" {
		c.Broker = broker.None
	}
	if c.Daemon == "" {
		c.Daemon = "containerd"
		if c.Plugin {
			c.Daemon = PluginDaemon
		}
	}
	if c.PluginEdit != nil && !c.Plugin {
		return errors.New("lab: PluginEdit without Plugin: the hosts run no plugin")
	}
	if c.UplinkMbit < 0 {
		return fmt.Errorf("lab: uplink rate %d Mbit/s: must be positive (or 0 for unthrottled)", c.UplinkMbit)
	}
	return nil
}

// Dir returns the directory of lab name under baseDir.
func Dir(baseDir, name string) string {
	if baseDir == "" {
		baseDir = DefaultBaseDir
	}
	return filepath.Join(baseDir, name)
}

// Up creates the lab. On error, everything it had created is removed again.
func Up(ctx context.Context, cfg Config) (l *Lab, err error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	prefix, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil || !prefix.Addr().Is4() || prefix.Bits() != 24 {
		return nil, fmt.Errorf("lab: subnet %q: want an IPv4 /24 such as 10.231.0.0/24", cfg.Subnet)
	}
	dir := Dir(cfg.BaseDir, cfg.Name)
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return nil, fmt.Errorf("lab: %q already exists in %s: run `ftwin-migrate lab down --name %s` first", cfg.Name, dir, cfg.Name)
	}
	if left := Find(cfg.BaseDir, cfg.Name); !left.Empty() {
		return nil, fmt.Errorf("lab: leftovers of an earlier %q lab exist (%s): run `ftwin-migrate lab down --name %s` first", cfg.Name, left, cfg.Name)
	}
	for _, tool := range []string{"ip", "tc", cfg.Daemon, "nsenter", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("lab: %s not found (run `make install`): %w", tool, err)
		}
	}
	if cfg.DaemonEnv == nil {
		if cfg.DaemonEnv, err = doctor.CRIUFaultEnv(); err != nil {
			return nil, fmt.Errorf("lab: probe hardware breakpoints for CRIU: %w", err)
		}
	}

	base := prefix.Addr().As4()
	ip := func(last byte) string { b := base; b[3] = last; return netip.AddrFrom4(b).String() }
	l = &Lab{
		Name: cfg.Name, Dir: dir, Bridge: "ftb-" + cfg.Name, BridgeIP: ip(1),
		BrokerKind: cfg.Broker, DaemonEnv: cfg.DaemonEnv, Plugin: cfg.Plugin,
	}
	defer func() {
		if err != nil {
			_ = l.Down(context.WithoutCancel(ctx))
			l = nil
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return l, fmt.Errorf("lab: create %s: %w", dir, err)
	}
	if err := run(ctx, "ip", "link", "add", l.Bridge, "type", "bridge"); err != nil {
		return l, err
	}
	if err := run(ctx, "ip", "addr", "add", l.BridgeIP+"/24", "dev", l.Bridge); err != nil {
		return l, err
	}
	if err := run(ctx, "ip", "link", "set", l.Bridge, "up"); err != nil {
		return l, err
	}
	for i, name := range cfg.Hosts {
		h := &Host{
			Name: name, IP: ip(byte(11 + i)), NetNS: fmt.Sprintf("ftl-%s-%s", cfg.Name, name),
			Veth: fmt.Sprintf("ftv-%s-%d", cfg.Name, i), Dir: filepath.Join(dir, "hosts", name), lab: cfg.Name,
		}
		if !cfg.SharedClock && timeNamespaces() {
			h.Clock = HostClock(i)
		}
		l.Hosts = append(l.Hosts, h)
		if err := h.plumb(ctx, l.Bridge); err != nil {
			return l, err
		}
		if cfg.UplinkMbit > 0 {
			if err := h.SetUplink(ctx, cfg.UplinkMbit); err != nil {
				return l, err
			}
		}
	}
	if err := l.save(); err != nil {
		return l, err
	}
	if cfg.Plugin {
		// The daemons read their certificates as they start.
		l.PKIDir = filepath.Join(dir, "pki")
		var hosts []pki.Host
		for _, h := range l.Hosts {
			hosts = append(hosts, pki.Host{Name: h.Name, IPs: []net.IP{net.ParseIP(h.IP)}})
		}
		if err := pki.Init(l.PKIDir, hosts); err != nil {
			return l, fmt.Errorf("lab: %w", err)
		}
		if err := l.save(); err != nil {
			return l, err
		}
	}
	// Start the daemons one after the other: each takes a second or two of CPU to come up.
	for _, h := range l.Hosts {
		dc := ctrd.Config{Dir: h.Dir, NetNS: h.NetNSPath(), Env: cfg.DaemonEnv, Binary: cfg.Daemon, Clock: h.Clock}
		if cfg.Plugin {
			pc := h.PluginConfig(l.PKIDir)
			if cfg.PluginEdit != nil {
				cfg.PluginEdit(h.Name, &pc)
			}
			if dc.ExtraConfig, err = pc.SectionTOML(); err != nil {
				return l, fmt.Errorf("lab: host %s: %w", h.Name, err)
			}
		}
		if _, err := ctrd.Start(ctx, dc); err != nil {
			return l, fmt.Errorf("lab: host %s: %w", h.Name, err)
		}
	}
	addr := fmt.Sprintf("%s:%d", l.BridgeIP, BrokerPort)
	switch cfg.Broker {
	case broker.Embedded:
		b, err := broker.StartEmbedded(addr)
		if err != nil {
			return l, fmt.Errorf("lab: %w", err)
		}
		l.broker, l.BrokerAddr = b, b.Addr()
	case broker.Apache:
		b, err := broker.StartApache(ctx, broker.ApacheConfig{Dir: filepath.Join(dir, ApacheBrokerDir), Addr: addr})
		if err != nil {
			return l, fmt.Errorf("lab: %w", err)
		}
		l.broker, l.BrokerAddr = b, b.Addr()
	}
	return l, l.save()
}

// HostClock is the clock offsets of host i of a lab (see Config.SharedClock): monotonic one
// day plus i hours, boottime two days plus i hours. Offsets are positive because the kernel
// refuses ones that would put a clock before zero.
func HostClock(i int) ctrd.ClockOffsets {
	return ctrd.ClockOffsets{
		Monotonic: 24*time.Hour + time.Duration(i)*time.Hour,
		Boottime:  48*time.Hour + time.Duration(i)*time.Hour,
	}
}

// timeNamespaces reports whether the kernel has time namespaces (Linux 5.6 and later).
func timeNamespaces() bool {
	_, err := os.Stat("/proc/self/ns/time")
	return err == nil
}

// plumb creates the host's network namespace and its link to the bridge.
func (h *Host) plumb(ctx context.Context, bridge string) error {
	peer := h.Veth + "p"
	steps := [][]string{
		{"ip", "netns", "add", h.NetNS},
		{"ip", "link", "add", h.Veth, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", h.NetNS},
		{"ip", "link", "set", h.Veth, "master", bridge},
		{"ip", "link", "set", h.Veth, "up"},
		{"ip", "-n", h.NetNS, "link", "set", peer, "name", "eth0"},
		// The host's link is a port of a bridge of its own, which holds the host's address and
		// the links of containers with addresses of their own (see network.go).
		{"ip", "-n", h.NetNS, "link", "add", hostBridge, "type", "bridge"},
		{"ip", "-n", h.NetNS, "link", "set", "eth0", "master", hostBridge},
		{"ip", "-n", h.NetNS, "addr", "add", h.IP + "/24", "dev", hostBridge},
		{"ip", "-n", h.NetNS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NetNS, "link", "set", hostBridge, "up"},
		{"ip", "-n", h.NetNS, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return fmt.Errorf("lab: host %s network: %w", h.Name, err)
		}
	}
	return nil
}

// hostBridge is the bridge in each host's network namespace.
const hostBridge = "br0"

// NetNSPath is the host's network namespace as a path (for nsenter, setns, OCI specs).
func (h *Host) NetNSPath() string { return filepath.Join("/run/netns", h.NetNS) }

// Address is the host's containerd socket.
func (h *Host) Address() string { return ctrd.Socket(h.Dir) }

// Client connects to the host's containerd. Close it when done.
func (h *Host) Client() (*containerd.Client, error) {
	c, err := containerd.New(h.Address(), containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("lab: connect to containerd of host %s: %w", h.Name, err)
	}
	return c, nil
}

// Command returns a command that runs in the host's network namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.NetNSPath(), "--", name}, args...)...)
}

// CgroupParent is the parent of this host's containers in the machine's cgroup hierarchy.
func (h *Host) CgroupParent() string { return fmt.Sprintf("/ftwin-lab/%s/%s", h.lab, h.Name) }

// CgroupsPath returns a cgroups path for a container of this host. Simulated hosts share the
// machine's cgroup hierarchy, so two hosts must not put containers at the same path (a checkpointed
// source and its restored copy would share, and a freeze or delete of one would hit the other).
func (h *Host) CgroupsPath(namespace, id string) string {
	return path.Join(h.CgroupParent(), namespace, id)
}

// SetUplink throttles the host's link to mbit Mbit/s in both directions (0 removes the limit).
func (h *Host) SetUplink(ctx context.Context, mbit int) error {
	return h.SetUplinkKbit(ctx, mbit*1000)
}

// SetLinkUp takes the host's link down (false: every packet to and from the host is lost, as
// a cut cable) or up again.
func (h *Host) SetLinkUp(ctx context.Context, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := run(ctx, "ip", "link", "set", "dev", h.Veth, state); err != nil {
		return fmt.Errorf("lab: set host %s's link %s: %w", h.Name, state, err)
	}
	return nil
}

// SetUplinkKbit throttles the host's link to kbit kbit/s in both directions (0 removes the
// limit).
func (h *Host) SetUplinkKbit(ctx context.Context, kbit int) error {
	type dev struct{ ns, name string }
	for _, d := range []dev{{"", h.Veth}, {h.NetNS, "eth0"}} {
		pre := []string{"tc"}
		if d.ns != "" {
			pre = []string{"ip", "netns", "exec", d.ns, "tc"}
		}
		_ = run(ctx, append(pre, "qdisc", "del", "dev", d.name, "root")...) // absent is fine
		if kbit == 0 {
			continue
		}
		// burst: at least rate/HZ; 64 KiB covers 100 Mbit/s at HZ=250 with room to spare.
		if err := run(ctx, append(pre, "qdisc", "add", "dev", d.name, "root", "tbf",
			"rate", fmt.Sprintf("%dkbit", kbit), "burst", "64kb", "latency", "100ms")...); err != nil {
			return fmt.Errorf("lab: throttle host %s to %d kbit/s: %w", h.Name, kbit, err)
		}
	}
	return nil
}

// Host returns the host called name.
func (l *Lab) Host(name string) (*Host, error) {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	names := make([]string, len(l.Hosts))
	for i, h := range l.Hosts {
		names[i] = h.Name
	}
	return nil, fmt.Errorf("lab %s has no host %q (hosts: %s)", l.Name, name, strings.Join(names, ", "))
}

// ApacheBrokerDir is the Apache Kafka broker's directory in the lab's directory: its
// server.properties, log4j2.properties, data/ and broker.log.
const ApacheBrokerDir = "kafka"

// KfakeLog is the log of the embedded broker served by a process of its own (`lab up`), under
// the lab's directory.
const KfakeLog = "kfake/kfake.log"

// BrokerLogPath is the log of the lab's broker: the Apache broker's broker.log (its group
// coordinator at INFO: joins, static-member replacements, rebalances), or the log of an
// embedded broker served by a process of its own. Empty when the lab has no broker.
func (l *Lab) BrokerLogPath() string {
	switch l.BrokerKind {
	case broker.Apache:
		return filepath.Join(l.Dir, ApacheBrokerDir, "broker.log")
	case broker.Embedded:
		return filepath.Join(l.Dir, KfakeLog)
	}
	return ""
}

// Broker returns the broker started in this process, or nil (no broker, or a lab loaded from disk).
func (l *Lab) Broker() broker.Broker { return l.broker }

// Down stops the lab and removes everything it made (see Teardown).
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	if l.broker != nil {
		errs = append(errs, l.broker.Close())
	}
	errs = append(errs, Teardown(ctx, filepath.Dir(l.Dir), l.Name))
	return errors.Join(errs...)
}

const stateFile = "lab.json"

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.Dir, stateFile), b, 0o644); err != nil {
		return fmt.Errorf("lab: save state: %w", err)
	}
	return nil
}

// Load reads the state of a running lab written by Up (for commands run in another process).
func Load(baseDir, name string) (*Lab, error) {
	p := filepath.Join(Dir(baseDir, name), stateFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q is not up (no %s): run `ftwin-migrate lab up --name %s`", name, p, name)
	} else if err != nil {
		return nil, fmt.Errorf("lab: read %s: %w", p, err)
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("lab: parse %s: %w", p, err)
	}
	for _, h := range l.Hosts {
		h.lab = l.Name
	}
	return &l, nil
}

func run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AttachBroker records a broker started outside Up, for example by a process of its own whose
// command line names the lab's directory (so that teardown finds it).
func (l *Lab) AttachBroker(kind broker.Kind, addr string) error {
	l.BrokerKind, l.BrokerAddr = kind, addr
	return l.save()
}

// RestartBroker restarts the lab's Apache Kafka broker on its storage (clients see their
// connections drop and the broker come back). The embedded broker keeps its log in memory and
// cannot restart.
func (l *Lab) RestartBroker(ctx context.Context) error {
	b, ok := l.broker.(*broker.ApacheBroker)
	if !ok {
		return fmt.Errorf("lab: the %s broker cannot restart (its log would be lost): use broker.Apache", l.BrokerKind)
	}
	return b.Restart(ctx)
}
