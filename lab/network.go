package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/ftwin-migrate/ftwin-migrate/ctrd"
	"github.com/ftwin-migrate/ftwin-migrate/netmove"
)

// A container with an address of its own (Workload.OwnAddress) gets, on its host, a network
// namespace of its own on the lab network (package netmove): a veth to the bridge br0 in its
// host's network namespace, which also holds the host's link, so the container is a station
// of the lab network with an address of the lab's subnet, as a CNI bridge on a flat network
// gives one. Moving it recreates the namespace on the target with the same address and MAC,
// and its established TCP connections carry on.

// Labels that record a container's own address on the lab network.
const (
	LabelAddress = "io.ftwin.lab.address" // "10.231.0.100/24"
	LabelMAC     = "io.ftwin.lab.mac"     // "02:fa:0a:e7:00:64"
)

// containerLabels returns the container labels that record n.
func containerLabels(n netmove.Address) map[string]string {
	return map[string]string{LabelAddress: n.Prefix.String(), LabelMAC: n.MAC.String()}
}

// ContainerNetFromLabels reads a container's own address back from its labels (ok false: it
// uses its host's network).
func ContainerNetFromLabels(labels map[string]string) (n netmove.Address, ok bool, err error) {
	a, m := labels[LabelAddress], labels[LabelMAC]
	if a == "" && m == "" {
		return n, false, nil
	}
	if n.Prefix, err = netip.ParsePrefix(a); err != nil {
		return n, true, fmt.Errorf("lab: container label %s=%q: %w", LabelAddress, a, err)
	}
	if n.MAC, err = net.ParseMAC(m); err != nil {
		return n, true, fmt.Errorf("lab: container label %s=%q: %w", LabelMAC, m, err)
	}
	return n, true, nil
}

// First and last host byte of the container addresses of a lab's /24.
const firstContainerAddr, lastContainerAddr = 100, 249

// allocateAddress reserves the lowest free container address of the host's lab for container
// id: a file per address in the lab's directory, created exclusively (two processes of the lab
// never take the same one); releaseAddress frees it.
func (h *Host) allocateAddress(id string) (netmove.Address, error) {
	prefix, err := netip.ParsePrefix(h.IP + "/24")
	if err != nil {
		return netmove.Address{}, fmt.Errorf("lab: host address %q: %w", h.IP, err)
	}
	dir := filepath.Join(h.labDir(), "addresses")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return netmove.Address{}, fmt.Errorf("lab: create %s: %w", dir, err)
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
			return netmove.Address{}, fmt.Errorf("lab: reserve address %s: %w", a, err)
		}
		_, _ = f.WriteString(id + "\n")
		_ = f.Close()
		return netmove.Address{Prefix: netip.PrefixFrom(a, 24), MAC: netmove.MACFor(a)}, nil
	}
	return netmove.Address{}, fmt.Errorf("lab %s: all %d container addresses are taken: remove containers first", h.lab, lastContainerAddr-firstContainerAddr+1)
}

// labDir is the directory of the host's lab.
func (h *Host) labDir() string { return filepath.Dir(filepath.Dir(h.Dir)) }

// releaseAddress frees a container address of the lab (a no-op when it is not reserved).
func releaseAddress(labDir string, n netmove.Address) {
	_ = os.Remove(filepath.Join(labDir, "addresses", n.Prefix.Addr().String()))
}

// Network is the host's side of container addresses that move: the bridge br0 in its network
// namespace, the containers' namespaces named ftl-LAB-HOST.ID (lab and host names have no '.',
// so no host's own namespace is ever taken for one, and teardown finds them with the host's),
// and the host's containerd in a mount namespace of its own, where every container namespace
// of the host is mounted (those made here are mounted there too; a plugin daemon's receive
// role makes its own there) and through which they are read (see PluginConfig). It serves
// migrate.Options.Network on the source and agent.Config.Network on the target.
func (h *Host) Network() netmove.Bridge {
	return netmove.Bridge{
		Name: hostBridge, HostNetNS: h.NetNS, NetNSPrefix: fmt.Sprintf("ftl-%s-%s.", h.lab, h.Name),
		DaemonPid: func() (int, error) { return ctrd.DaemonPid(h.Dir) },
	}
}

// ContainerNetNS is the name of container id's network namespace on the host.
func (h *Host) ContainerNetNS(id string) string { return h.Network().NetNS(id) }

// ContainerConnections lists the established TCP connections of container id, which has an
// address of its own, as "LOCAL PEER" pairs: how a test tells a connection carried across a
// move from a new one.
func (h *Host) ContainerConnections(ctx context.Context, id string) ([]string, error) {
	return h.Network().Connections(ctx, id)
}
