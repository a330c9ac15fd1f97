package lab

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
	"github.com/ftwin-migrate/ftwin-migrate/ctrd"
)

// A container with an address of its own (Workload.OwnAddress) gets, on its host, a network
// namespace of its own joined to the lab network the way a CNI bridge plugin does it on a flat
// network: a veth from the namespace (eth0, a fixed MAC) to a bridge in the host's namespace
// (br0, which also holds the host's link), so the container is a station of the lab network
// with an address of the lab's subnet. Moving it recreates the namespace on the target with the
// same address and MAC, its link to the bridge down while CRIU restores it, then up and
// announced (a gratuitous ARP), so the lab's bridges and the peers learn where it went:
// established TCP connections, restored open by CRIU, carry on.

// Labels that record a container's own address on the lab network.
const (
	LabelAddress = "io.ftwin.lab.address" // "10.231.0.100/24"
	LabelMAC     = "io.ftwin.lab.mac"     // "02:fa:0a:e7:00:64"
)

// ContainerNet is a container's place on the lab network.
type ContainerNet struct {
	Addr netip.Prefix     // the container's address and the lab's prefix
	MAC  net.HardwareAddr // locally administered, derived from the address
}

// Labels returns the container labels that record n.
func (n ContainerNet) Labels() map[string]string {
	return map[string]string{LabelAddress: n.Addr.String(), LabelMAC: n.MAC.String()}
}

// ContainerNetFromLabels reads a container's own address back from its labels (ok false: it
// uses its host's network).
func ContainerNetFromLabels(labels map[string]string) (n ContainerNet, ok bool, err error) {
	a, m := labels[LabelAddress], labels[LabelMAC]
	if a == "" && m == "" {
		return n, false, nil
	}
	if n.Addr, err = netip.ParsePrefix(a); err != nil {
		return n, true, fmt.Errorf("lab: container label %s=%q: %w", LabelAddress, a, err)
	}
	if n.MAC, err = net.ParseMAC(m); err != nil {
		return n, true, fmt.Errorf("lab: container label %s=%q: %w", LabelMAC, m, err)
	}
	return n, true, nil
}

// macFor derives a locally administered unicast MAC from an IPv4 address.
func macFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0xfa, b[0], b[1], b[2], b[3]}
}

// First and last host byte of the container addresses of a lab's /24.
const firstContainerAddr, lastContainerAddr = 100, 249

// allocateAddress reserves the lowest free container address of the host's lab for container
// id: a file per address in the lab's directory, created exclusively (two processes of the lab
// never take the same one); releaseAddress frees it.
func (h *Host) allocateAddress(id string) (ContainerNet, error) {
	prefix, err := netip.ParsePrefix(h.IP + "/24")
	if err != nil {
		return ContainerNet{}, fmt.Errorf("lab: host address %q: %w", h.IP, err)
	}
	dir := filepath.Join(h.labDir(), "addresses")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ContainerNet{}, fmt.Errorf("lab: create %s: %w", dir, err)
	}
	base := prefix.Masked().Addr().As4()
	for last := firstContainerAddr; last <= lastContainerAddr; last++ {
		b := base
		b[3] = byte(last)
		a := netip.AddrFrom4(b)
		f, err := os.OpenFile(filepath.Join(dir, a.String()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return ContainerNet{}, fmt.Errorf("lab: reserve address %s: %w", a, err)
		}
		_, _ = f.WriteString(id + "\n")
		_ = f.Close()
		return ContainerNet{Addr: netip.PrefixFrom(a, 24), MAC: macFor(a)}, nil
	}
	return ContainerNet{}, fmt.Errorf("lab %s: all %d container addresses are taken: remove containers first", h.lab, lastContainerAddr-firstContainerAddr+1)
}

// labDir is the directory of the host's lab.
func (h *Host) labDir() string { return filepath.Dir(filepath.Dir(h.Dir)) }

// releaseAddress frees a container address of the lab (a no-op when it is not reserved).
func releaseAddress(labDir string, n ContainerNet) {
	_ = os.Remove(filepath.Join(labDir, "addresses", n.Addr.Addr().String()))
}

// ContainerNetNS is the name of container id's network namespace on the host. Lab and host
// names have no '.', so no host's own namespace (ftl-LAB-HOST) is ever taken for it, and
// teardown finds it with the host's.
func (h *Host) ContainerNetNS(id string) string {
	return fmt.Sprintf("ftl-%s-%s.%s", h.lab, h.Name, id)
}

// hostVeth is the host-side end of container id's link: interface names hold 15 bytes, so a
// hash of the namespace's name.
func (h *Host) hostVeth(id string) string {
	sum := sha256.Sum256([]byte(h.ContainerNetNS(id)))
	return "ftc" + hex.EncodeToString(sum[:6])
}

// plumbContainer creates container id's network namespace on the host with address n, its
// link to the host's bridge down or up. A namespace left from an earlier attempt is replaced.
func (h *Host) plumbContainer(ctx context.Context, id string, n ContainerNet, up bool) (nsPath string, err error) {
	ns, veth := h.ContainerNetNS(id), h.hostVeth(id)
	pid, err := ctrd.DaemonPid(h.Dir)
	if err != nil {
		return "", fmt.Errorf("lab: host %s: %w", h.Name, err)
	}
	_ = run(ctx, "ip", "netns", "delete", ns)
	_ = run(ctx, "ip", "-n", h.NetNS, "link", "delete", veth) // a namespace's veth may outlive it a moment
	defer func() {
		if err != nil {
			_ = run(context.WithoutCancel(ctx), "ip", "netns", "delete", ns)
		}
	}()
	steps := [][]string{
		{"ip", "netns", "add", ns},
		// The host's containerd runs in a mount namespace of its own, made before this one
		// existed: the namespace's mount at /run/netns/NS is not there. Mount it there too, for
		// runc to join (a mount point unlinked in one mount namespace is detached in all).
		{"nsenter", "--net=" + filepath.Join("/run/netns", ns), "--mount=" + filepath.Join("/proc", strconv.Itoa(pid), "ns", "mnt"),
			"--", "mount", "--bind", "/proc/self/ns/net", filepath.Join("/run/netns", ns)},
		{"ip", "-n", h.NetNS, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", h.NetNS, "link", "set", veth, "master", hostBridge},
		{"ip", "-n", ns, "link", "set", "eth0", "address", n.MAC.String()},
		{"ip", "-n", ns, "addr", "add", n.Addr.String(), "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return "", fmt.Errorf("lab: host %s: network of container %s: %w", h.Name, id, err)
		}
	}
	if up {
		if err := run(ctx, "ip", "-n", h.NetNS, "link", "set", veth, "up"); err != nil {
			return "", fmt.Errorf("lab: host %s: network of container %s: %w", h.Name, id, err)
		}
	}
	return filepath.Join("/run/netns", ns), nil
}

// SetContainerLinkUp connects container id's link to the host's bridge and announces its
// address there (a gratuitous ARP from the container's MAC: the lab's bridges learn its new
// port, the peers' ARP caches its MAC), or disconnects it: the address then answers nowhere
// from here. The host's end of the link goes down, not the container's: the container's eth0
// keeps its routes (without carrier), which CRIU needs to restore connections into it, and a
// peer's packets cannot reach it before its sockets are back (the kernel would reset them).
func (h *Host) SetContainerLinkUp(ctx context.Context, id string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := run(ctx, "ip", "-n", h.NetNS, "link", "set", h.hostVeth(id), state); err != nil {
		return fmt.Errorf("lab: host %s: set the link of container %s %s: %w", h.Name, id, state, err)
	}
	if !up {
		return nil
	}
	n, err := h.readContainerNet(id)
	if err != nil {
		return err
	}
	if err := announce(filepath.Join("/run/netns", h.ContainerNetNS(id)), "eth0", n); err != nil {
		return fmt.Errorf("lab: host %s: announce container %s's address %s: %w", h.Name, id, n.Addr.Addr(), err)
	}
	return nil
}

// readContainerNet reads container id's address and MAC from its network namespace.
func (h *Host) readContainerNet(id string) (ContainerNet, error) {
	var n ContainerNet
	out, err := exec.Command("ip", "-n", h.ContainerNetNS(id), "-j", "addr", "show", "dev", "eth0").Output()
	if err != nil {
		return n, fmt.Errorf("lab: host %s: address of container %s: %w", h.Name, id, err)
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
		return n, fmt.Errorf("lab: host %s: address of container %s: unexpected `ip -j addr` output %q", h.Name, id, out)
	}
	if n.MAC, err = net.ParseMAC(links[0].Address); err != nil {
		return n, fmt.Errorf("lab: host %s: MAC of container %s: %w", h.Name, id, err)
	}
	for _, a := range links[0].AddrInfo {
		if a.Family == "inet" {
			addr, err := netip.ParseAddr(a.Local)
			if err != nil {
				return n, fmt.Errorf("lab: host %s: address of container %s: %w", h.Name, id, err)
			}
			n.Addr = netip.PrefixFrom(addr, a.PrefixLen)
			return n, nil
		}
	}
	return n, fmt.Errorf("lab: host %s: container %s has no IPv4 address", h.Name, id)
}

// unplumbContainer removes container id's network namespace from the host (its veth goes with
// it); a no-op when there is none.
func (h *Host) unplumbContainer(ctx context.Context, id string) error {
	ns := h.ContainerNetNS(id)
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := run(ctx, "ip", "netns", "delete", ns); err != nil {
		return fmt.Errorf("lab: host %s: remove the network of container %s: %w", h.Name, id, err)
	}
	return nil
}

// HostNetwork is a lab host's side of container addresses that move (see network.go): the
// source's for package migrate (migrate.SourceNetwork) and the target's for its agent
// (agent.Network). Containers are found by id; the containerd namespace is the lab's.
type HostNetwork struct{ h *Host }

// Network returns the host's HostNetwork.
func (h *Host) Network() HostNetwork { return HostNetwork{h} }

// Address returns container id's own address, or nil when it is on the host's network.
func (n HostNetwork) Address(_ context.Context, _, id string) (*agent.ContainerAddress, error) {
	if _, err := os.Stat(filepath.Join("/run/netns", n.h.ContainerNetNS(id))); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	cn, err := n.h.readContainerNet(id)
	if err != nil {
		return nil, err
	}
	return &agent.ContainerAddress{IP: cn.Addr.String(), MAC: cn.MAC.String()}, nil
}

// Disconnect takes container id's address off the network from this host.
func (n HostNetwork) Disconnect(ctx context.Context, _, id string) error {
	return n.h.SetContainerLinkUp(ctx, id, false)
}

// Reconnect puts it back and announces it.
func (n HostNetwork) Reconnect(ctx context.Context, _, id string) error {
	return n.h.SetContainerLinkUp(ctx, id, true)
}

// Connect is Reconnect, for the target's side.
func (n HostNetwork) Connect(ctx context.Context, _, id string) error {
	return n.h.SetContainerLinkUp(ctx, id, true)
}

// Prepare makes container id's network namespace on this host with address a, its link down.
func (n HostNetwork) Prepare(ctx context.Context, _, id string, a agent.ContainerAddress) (string, error) {
	var cn ContainerNet
	var err error
	if cn.Addr, err = netip.ParsePrefix(a.IP); err != nil {
		return "", fmt.Errorf("lab: container address %q: %w", a.IP, err)
	}
	if cn.MAC, err = net.ParseMAC(a.MAC); err != nil {
		return "", fmt.Errorf("lab: container MAC %q: %w", a.MAC, err)
	}
	return n.h.plumbContainer(ctx, id, cn, false)
}

// Remove removes container id's network namespace from this host.
func (n HostNetwork) Remove(ctx context.Context, _, id string) error {
	return n.h.unplumbContainer(ctx, id)
}

// ContainerConnections lists the established TCP connections of container id, which has an
// address of its own, as "LOCAL PEER" pairs (ss(8) in its network namespace): how a test
// tells a connection carried across a move from a new one.
func (h *Host) ContainerConnections(ctx context.Context, id string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", h.ContainerNetNS(id), "ss", "-Htn", "state", "established").Output()
	if err != nil {
		return nil, fmt.Errorf("lab: host %s: connections of container %s: %w", h.Name, id, err)
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
