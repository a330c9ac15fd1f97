package lab

import (
	"fmt"
	"net"
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
// The network section is Host.Network's (the bridge br0, the namespaces named ftl-LAB-HOST.ID),
// with no host_netns: the daemon runs in the host's network namespace, where br0 is. The
// daemon also runs in a mount namespace of its own (package ctrd: `unshare --mount
// --propagation private`), and the lab's tools in the caller's, and a namespace's mount at
// /run/netns/NAME is in the mount namespace it was made in only. The plugin is the daemon: the
// namespaces its receive role makes are mounted where runc looks, in the daemon's, and nowhere
// else. Host.Network, which the tools use (`lab run --own-address`, which makes a container's
// namespace from the CLI's process, ContainerConnections, `lab status`, Move, in-process
// agents and migrators), mounts each namespace it makes in the daemon's too (DaemonPid), and
// reads namespaces through the daemon's (/proc/PID/root/run/netns/NAME). So the daemon's
// mount namespace is the one where every namespace of the host is mounted, whoever made it,
// and both sides look there. Removing one works from either side: `ip netns delete` unlinks
// the file, which detaches its mounts in every mount namespace (teardown too, from the
// caller's). Mirroring the plugin's mounts into the tools' mount namespace instead would need
// a handle on that namespace from inside the daemon, which nothing there holds.
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
		Network: plugin.NetworkConfig{Bridge: hostBridge, NetNSPrefix: h.Network().NetNSPrefix},
	}
}

// AgentAddr is where the host's receive endpoint listens: its in-process agent's (StartAgent)
// or, on a lab of the plugin daemon, its daemon's.
func (h *Host) AgentAddr() string { return net.JoinHostPort(h.IP, fmt.Sprint(AgentPort)) }
