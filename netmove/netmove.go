// Package netmove gives containers addresses of their own that move with them between hosts
// on a shared network, the way a CNI bridge plugin with static addresses does on a flat or
// overlay network: a network namespace per container with a veth (eth0, a fixed MAC) to a
// Linux bridge on the host. Moving a container recreates its namespace on the target with the
// same address and MAC, its link held down while CRIU restores its sockets established, then
// up and announced with gratuitous ARPs, so the bridges and the peers learn where it went and
// its TCP connections carry on.
//
// Bridge is one host's side. It serves the source's side of a migration
// (migrate.SourceNetwork: Address, Disconnect, Reconnect, Remove) and the target agent's
// (agent.Network: Prepare, Connect, Remove). The lab's hosts use it with a bridge in each
// host's network namespace; a real host with a bridge on a shared L2 network uses it as it is
// (`ftwin-migrate net attach`, `receive --bridge`, `migrate --bridge`).
package netmove

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
)

// Address is a container's place on the shared network.
type Address struct {
	Prefix netip.Prefix     // the address with the network's prefix length
	MAC    net.HardwareAddr // its link-layer address
}

// MACFor derives a locally administered unicast MAC from an IPv4 address (02:fa:A:B:C:D).
func MACFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0xfa, b[0], b[1], b[2], b[3]}
}

// ParseAddress reads an agent.ContainerAddress.
func ParseAddress(a agent.ContainerAddress) (Address, error) {
	var n Address
	var err error
	if n.Prefix, err = netip.ParsePrefix(a.IP); err != nil {
		return n, fmt.Errorf("netmove: container address %q: want an address with its prefix length, such as 10.0.0.100/24: %w", a.IP, err)
	}
	if n.MAC, err = net.ParseMAC(a.MAC); err != nil {
		return n, fmt.Errorf("netmove: container MAC %q: %w", a.MAC, err)
	}
	return n, nil
}

// Agent returns n as the agent protocol carries it.
func (n Address) Agent() agent.ContainerAddress {
	return agent.ContainerAddress{IP: n.Prefix.String(), MAC: n.MAC.String()}
}

// Bridge attaches containers of one host to a Linux bridge. The zero value is not usable:
// Name is required.
type Bridge struct {
	// Name is the bridge the containers' links join: a bridge on the network the hosts share
	// (its uplink a port of it), the same name on every host.
	Name string
	// HostNetNS is the name (under /run/netns) of the network namespace the bridge is in.
	// Default: the caller's (a real host's).
	HostNetNS string
	// NetNSPrefix names the containers' namespaces: /run/netns/PREFIX + id. Default "ftwin-".
	NetNSPrefix string
	// DaemonPid, when set, returns a process in the mount namespace containerd runs in, when
	// that is one of its own made before the containers' namespaces were (the lab's daemons):
	// each namespace Attach makes is mounted there too, for runc to find, and the containers'
	// namespaces are read through it (/proc/PID/root/run/netns/NAME: Read, Connections, the
	// announcement), since containerd's mount namespace is the one every container namespace
	// of the host is mounted in — those the caller made, and those containerd itself made
	// (the plugin's receive role, whose mounts are in its own mount namespace only). Nil:
	// containerd shares the caller's mount namespace (a real host; and the plugin, which is
	// containerd).
	DaemonPid func() (int, error)
}

// NetNS is the name of container id's network namespace.
func (b Bridge) NetNS(id string) string {
	p := b.NetNSPrefix
	if p == "" {
		p = "ftwin-"
	}
	return p + id
}

// NetNSPath is its path, for the container's spec.
func (b Bridge) NetNSPath(id string) string { return filepath.Join("/run/netns", b.NetNS(id)) }

// readPath is the path the caller opens container id's namespace by: NetNSPath in its own
// mount namespace, or in containerd's (DaemonPid) through the daemon's root directory, which
// resolves in the daemon's mount namespace.
func (b Bridge) readPath(id string) (string, error) {
	if b.DaemonPid == nil {
		return b.NetNSPath(id), nil
	}
	pid, err := b.DaemonPid()
	if err != nil {
		return "", fmt.Errorf("netmove: network namespace of container %s: %w", id, err)
	}
	return filepath.Join("/proc", strconv.Itoa(pid), "root", b.NetNSPath(id)), nil
}

// inNetNS returns the command that runs args in container id's network namespace, opened as
// readPath says: `ip netns exec NS` (or `ip -n NS` for ip itself) in the caller's mount
// namespace, nsenter(1) on the daemon's path otherwise.
func (b Bridge) inNetNS(ctx context.Context, id string, args ...string) (*exec.Cmd, error) {
	if b.DaemonPid == nil {
		if args[0] == "ip" {
			return exec.CommandContext(ctx, "ip", append([]string{"-n", b.NetNS(id)}, args[1:]...)...), nil
		}
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", b.NetNS(id)}, args...)...), nil
	}
	p, err := b.readPath(id)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p, "--"}, args...)...), nil
}

// veth is the bridge-side end of container id's link: interface names hold 15 bytes, so a hash
// of the namespace's name.
func (b Bridge) veth(id string) string {
	sum := sha256.Sum256([]byte(b.NetNS(id)))
	return "ftc" + hex.EncodeToString(sum[:6])
}

// ip runs ip(8) in the bridge's namespace.
func (b Bridge) ip(ctx context.Context, args ...string) error {
	if b.HostNetNS != "" {
		args = append([]string{"-n", b.HostNetNS}, args...)
	}
	return run(ctx, append([]string{"ip"}, args...)...)
}

// Attach creates container id's network namespace with address n, its link to the bridge up
// or held down, and returns the namespace's path. A namespace left from an earlier attempt is
// replaced.
func (b Bridge) Attach(ctx context.Context, id string, n Address, up bool) (nsPath string, err error) {
	if b.Name == "" {
		return "", errors.New("netmove: no bridge named")
	}
	if err := b.ip(ctx, "link", "show", "dev", b.Name, "type", "bridge"); err != nil {
		return "", fmt.Errorf("netmove: no bridge %q on this host (%v): create it with its uplink as a port (ip link add %s type bridge; ip link set UPLINK master %s), the same on every host", b.Name, err, b.Name, b.Name)
	}
	ns, veth, path := b.NetNS(id), b.veth(id), b.NetNSPath(id)
	_ = run(ctx, "ip", "netns", "delete", ns)
	_ = b.ip(ctx, "link", "delete", veth) // a namespace's veth may outlive it a moment
	defer func() {
		if err != nil {
			_ = run(context.WithoutCancel(ctx), "ip", "netns", "delete", ns)
		}
	}()
	if err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return "", fmt.Errorf("netmove: network of container %s: %w", id, err)
	}
	if b.DaemonPid != nil {
		pid, err := b.DaemonPid()
		if err != nil {
			return "", fmt.Errorf("netmove: network of container %s: %w", id, err)
		}
		// containerd's mount namespace was made before this network namespace existed: its
		// mount at /run/netns/NS is not there. Mount it there too (a mount point unlinked in
		// one mount namespace is detached in all, so `ip netns delete` still removes it).
		if err := run(ctx, "nsenter", "--net="+path, "--mount="+filepath.Join("/proc", strconv.Itoa(pid), "ns", "mnt"),
			"--", "mount", "--bind", "/proc/self/ns/net", path); err != nil {
			return "", fmt.Errorf("netmove: network of container %s: %w", id, err)
		}
	}
	hostSide := [][]string{
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", veth, "master", b.Name},
	}
	for _, s := range hostSide {
		if err := b.ip(ctx, s...); err != nil {
			return "", fmt.Errorf("netmove: network of container %s: %w", id, err)
		}
	}
	inside := [][]string{
		{"link", "set", "eth0", "address", n.MAC.String()},
		{"addr", "add", n.Prefix.String(), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"link", "set", "lo", "up"},
	}
	for _, s := range inside {
		if err := run(ctx, append([]string{"ip", "-n", ns}, s...)...); err != nil {
			return "", fmt.Errorf("netmove: network of container %s: %w", id, err)
		}
	}
	if up {
		if err := b.ip(ctx, "link", "set", veth, "up"); err != nil {
			return "", fmt.Errorf("netmove: network of container %s: %w", id, err)
		}
	}
	return path, nil
}

// SetLinkUp connects container id's link to the bridge and announces its address there (a
// gratuitous ARP from the container's MAC: bridges learn its new port, peers' ARP caches its
// MAC), or disconnects it: the address then answers nowhere from here. The bridge's end of the
// link goes down, not the container's: its eth0 keeps its routes (without carrier), which CRIU
// needs to restore connections into it ("Network is unreachable" otherwise), and a peer's
// packets cannot reach it before its sockets are back (its kernel would reset them).
func (b Bridge) SetLinkUp(ctx context.Context, id string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := b.ip(ctx, "link", "set", b.veth(id), state); err != nil {
		return fmt.Errorf("netmove: set the link of container %s %s: %w", id, state, err)
	}
	if !up {
		return nil
	}
	n, err := b.Read(id)
	if err != nil {
		return err
	}
	nsPath, err := b.readPath(id)
	if err != nil {
		return err
	}
	if err := announce(nsPath, "eth0", n); err != nil {
		return fmt.Errorf("netmove: announce container %s's address %s: %w", id, n.Prefix.Addr(), err)
	}
	return nil
}

// Attached reports whether container id has a network namespace of its own here.
func (b Bridge) Attached(id string) bool {
	_, err := os.Stat(b.NetNSPath(id))
	return err == nil
}

// Read reads container id's address and MAC from its network namespace.
func (b Bridge) Read(id string) (Address, error) {
	var n Address
	cmd, err := b.inNetNS(context.Background(), id, "ip", "-j", "addr", "show", "dev", "eth0")
	if err != nil {
		return n, err
	}
	out, err := cmd.Output()
	if err != nil {
		return n, fmt.Errorf("netmove: address of container %s: %w", id, err)
	}
	var links []struct {
		Address  string `json:"address"`
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return n, fmt.Errorf("netmove: address of container %s: unexpected `ip -j addr` output %q", id, out)
	}
	if n.MAC, err = net.ParseMAC(links[0].Address); err != nil {
		return n, fmt.Errorf("netmove: MAC of container %s: %w", id, err)
	}
	for _, a := range links[0].AddrInfo {
		if a.Family == "inet" {
			addr, err := netip.ParseAddr(a.Local)
			if err != nil {
				return n, fmt.Errorf("netmove: address of container %s: %w", id, err)
			}
			n.Prefix = netip.PrefixFrom(addr, a.PrefixLen)
			return n, nil
		}
	}
	return n, fmt.Errorf("netmove: container %s has no IPv4 address", id)
}

// Detach removes container id's network namespace (its veth goes with it); a no-op when
// there is none.
func (b Bridge) Detach(ctx context.Context, id string) error {
	if !b.Attached(id) {
		return nil
	}
	if err := run(ctx, "ip", "netns", "delete", b.NetNS(id)); err != nil {
		return fmt.Errorf("netmove: remove the network of container %s: %w", id, err)
	}
	return nil
}

// Connections lists container id's established TCP connections as "LOCAL PEER" pairs (ss(8)
// in its namespace): how to tell a connection carried across a move from a new one.
func (b Bridge) Connections(ctx context.Context, id string) ([]string, error) {
	cmd, err := b.inNetNS(ctx, id, "ss", "-Htn", "state", "established")
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("netmove: connections of container %s: %w", id, err)
	}
	var conns []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// Recv-Q Send-Q Local Peer (the state column is left out with a state filter).
		if f := strings.Fields(line); len(f) >= 4 {
			conns = append(conns, f[2]+" "+f[3])
		}
	}
	return conns, nil
}

// The migration sides. Containers are found by id; the containerd namespace does not matter.

// Address returns container id's own address, or nil when it has no namespace here (it is on
// its host's network): migrate.SourceNetwork.
func (b Bridge) Address(_ context.Context, _, id string) (*agent.ContainerAddress, error) {
	if !b.Attached(id) {
		return nil, nil
	}
	n, err := b.Read(id)
	if err != nil {
		return nil, err
	}
	a := n.Agent()
	return &a, nil
}

// Disconnect takes container id's address off the network from this host.
func (b Bridge) Disconnect(ctx context.Context, _, id string) error {
	return b.SetLinkUp(ctx, id, false)
}

// Reconnect puts it back and announces it.
func (b Bridge) Reconnect(ctx context.Context, _, id string) error { return b.SetLinkUp(ctx, id, true) }

// Connect is Reconnect, for the target's side (agent.Network).
func (b Bridge) Connect(ctx context.Context, _, id string) error { return b.SetLinkUp(ctx, id, true) }

// Prepare makes container id's network namespace here with address a, its link held down
// (agent.Network).
func (b Bridge) Prepare(ctx context.Context, _, id string, a agent.ContainerAddress) (string, error) {
	n, err := ParseAddress(a)
	if err != nil {
		return "", err
	}
	return b.Attach(ctx, id, n, false)
}

// Remove removes container id's network namespace here.
func (b Bridge) Remove(ctx context.Context, _, id string) error { return b.Detach(ctx, id) }

func run(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
