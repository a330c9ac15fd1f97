package lab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/ftwin-migrate/ftwin-migrate/plugin"
)

// PluginDaemon is containerd with the ftwin-migrate plugin (cmd/containerd-ftwin), the daemon
// of a lab whose Config.Plugin is set.
const PluginDaemon = "containerd-ftwin"

// PluginConfig is the plugin's configuration on this host: its name and certificate from the
// lab's PKI, the receive endpoint on HOSTIP:AgentPort restoring into the lab's namespace on the
// host's network, with the host's cgroup parent and logs where LogPath says (as AgentConfig
// for an in-process agent), and containers' own addresses moving as Network says (as
// Host.Network for an in-process agent or migrator).
//
// The network section is Host.Network's, but for the daemon's side of the mount namespaces.
// The daemon runs in a mount namespace of its own (package ctrd: `unshare --mount
// --propagation private`), and the lab's tools (`lab run --own-address`, which makes a
// container's network namespace from the CLI's process, ContainerConnections, `lab status`,
// teardown) in init's. Host.Network, run from init's, mounts each namespace it makes in the
// daemon's too (DaemonPid), for runc; the plugin, which is the daemon, mounts each it makes in
// init's too (mount_in_init_ns), for the tools. So every namespace is mounted in both, whoever
// made it, and either side's `ip netns delete` removes it from both (unlinking a mount point
// detaches it in every mount namespace). That is the whole of it: the namespaces keep their
// names (ftl-LAB-HOST.ID), and the tools stay as they are. host_netns is left out: the daemon
// runs in the host's network namespace, where br0 is. Up refuses a plugin lab from a process
// outside init's mount namespace (checkInitMountNS), whose tools would not see the plugin's.
func (h *Host) PluginConfig(pkiDir string) plugin.Config {
	return plugin.Config{
		Host: h.Name, PKI: pkiDir, WorkDir: filepath.Join(h.Dir, "plugin"),
		Receive: plugin.ReceiveConfig{
			Listen:              net.JoinHostPort(h.IP, fmt.Sprint(AgentPort)),
			CgroupParent:        h.CgroupParent(),
			LogDir:              filepath.Dir(h.LogPath("x")),
			Namespaces:          []string{Namespace},
			AllowHostNamespaces: []string{"network"},
		},
		Network: plugin.NetworkConfig{Bridge: hostBridge, NetNSPrefix: h.Network().NetNSPrefix, MountInInitNS: true},
	}
}

// AgentAddr is where the host's receive endpoint listens: its in-process agent's (StartAgent)
// or, on a lab of the plugin daemon, its daemon's.
func (h *Host) AgentAddr() string { return net.JoinHostPort(h.IP, fmt.Sprint(AgentPort)) }

// checkInitMountNS refuses to bring a plugin lab up from outside init's mount namespace: its
// daemons mount the network namespaces of the containers they receive in init's (PluginConfig),
// where this process would not find them.
func checkInitMountNS() error {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	initNS, err2 := os.Readlink("/proc/1/ns/mnt")
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("lab: compare this process's mount namespace with init's: %w", err)
	}
	if self != initNS {
		return fmt.Errorf("lab: this process runs in mount namespace %s, not init's (%s): a plugin lab's daemons mount the network namespaces of containers moved in in init's, where this process would not see them; run the lab from init's mount namespace", self, initNS)
	}
	return nil
}
