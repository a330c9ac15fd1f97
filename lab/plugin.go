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
// for an in-process agent).
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
	}
}

// AgentAddr is where the host's receive endpoint listens: its in-process agent's (StartAgent)
// or, on a lab of the plugin daemon, its daemon's.
func (h *Host) AgentAddr() string { return net.JoinHostPort(h.IP, fmt.Sprint(AgentPort)) }
