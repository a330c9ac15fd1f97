// Package plugin is ftwin-migrate as a containerd 2.x plugin: a gRPC service (the API in
// api/services/migrate/v1) served on containerd's own socket that migrates this node's
// containers to other nodes, recovers a cut-short migration and inspects checkpoints, and,
// when configured to, the receive role (the agent's endpoint, package agent, served over
// mutual TLS to the other nodes) — so a node runs no separate process for migration.
//
// The plugin is compiled into a containerd binary (containerd 2.x loads no Go plugins, and a
// proxy plugin cannot add a service): importing this package registers it, as containerd's
// own plugins register themselves, and cmd/containerd-ftwin is the stock containerd server
// with it. It reaches containerd's services in process (containerd's client over
// client.WithInMemoryServices, as the CRI plugin does), and drives the same library packages as
// the CLI: there is one pipeline.
//
// Its configuration is the section [plugins."io.containerd.grpc.v1.ftwin-migrate"] of
// containerd's config.toml (Config). A bad one makes the plugin fail to load with the reason;
// containerd then goes on without it unless the plugin is in required_plugins, and
// containerd-ftwin refuses to start (CheckServerConfig).
package plugin

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/log"
	ctrdplugin "github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/internal/agentserver"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
)

// ID is the plugin's id; its type is plugins.GRPCPlugin, so its URI (the name of its config
// section and what required_plugins and disabled_plugins list) is URI.
const ID = "ftwin-migrate"

// URI is the plugin's full name: io.containerd.grpc.v1.ftwin-migrate.
const URI = string(plugins.GRPCPlugin) + "." + ID

func init() {
	registry.Register(&ctrdplugin.Registration{
		Type: plugins.GRPCPlugin,
		ID:   ID,
		// What client.WithInMemoryServices takes from the plugin set.
		Requires: []ctrdplugin.Type{
			plugins.EventPlugin, plugins.LeasePlugin, plugins.SandboxStorePlugin, plugins.TransferPlugin,
			plugins.MountManagerPlugin, plugins.ServicePlugin,
		},
		Config: &Config{},
		InitFn: initPlugin,
	})
}

func initPlugin(ic *ctrdplugin.InitContext) (any, error) {
	cfg := ic.Config.(*Config).withDefaults(ic.Properties[plugins.PropertyRootDir])
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := containerd.New("", containerd.WithInMemoryServices(ic))
	if err != nil {
		return nil, fmt.Errorf("plugin %s: containerd's services in process: %w", URI, err)
	}
	s := &Service{cfg: cfg, client: client}
	if err := os.MkdirAll(s.dumpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("plugin %s: work_dir: %w", URI, err)
	}
	if cfg.Receive.Listen != "" {
		if s.receive, err = startReceive(cfg, client); err != nil {
			return nil, fmt.Errorf("plugin %s: receive role: %w", URI, err)
		}
		log.G(ic.Context).WithField("address", s.receive.Addr).WithField("host", cfg.Host).Info("ftwin-migrate: receiving migrations")
	}
	ic.Meta.Exports = map[string]string{"host": cfg.Host}
	if s.receive != nil {
		ic.Meta.Exports["receive"] = s.receive.Addr
	}
	return s, nil
}

// AgentConfig is the agent configuration of the receive role cfg describes (cfg validated).
func AgentConfig(cfg Config, client *containerd.Client) agent.Config {
	r := cfg.Receive
	policy, _ := r.policy()
	a := agent.Config{
		Host: cfg.Host, Client: client, WorkDir: filepath.Join(cfg.WorkDir, "receive"),
		SessionTimeout: time.Duration(r.SessionTimeout), HeartbeatTimeout: time.Duration(r.HeartbeatTimeout),
		Namespaces: r.Namespaces, Policy: policy,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)).With("plugin", URI),
	}
	if cfg.Network.Bridge != "" { // give containers moved in the address they had (Config.Network)
		a.Network = cfg.Network.bridge()
	}
	if r.CgroupParent != "" {
		a.RestoreOpts = func(req agent.SessionRequest) []restore.Opt {
			return []restore.Opt{restore.WithCgroupsPath(path.Join(r.CgroupParent, req.Namespace, req.Container))}
		}
	}
	if r.LogDir != "" {
		a.LogPath = func(_, id string) string { return filepath.Join(r.LogDir, id+".log") }
	}
	return a
}

func startReceive(cfg Config, client *containerd.Client) (*agentserver.Server, error) {
	tlsCfg, err := pki.ServerConfig(cfg.PKI, cfg.Host)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Receive.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (receive.listen): %w", cfg.Receive.Listen, err)
	}
	return agentserver.Start(AgentConfig(cfg, client), ln, tlsCfg)
}

// CheckServerConfig checks the plugin's section of a containerd configuration (loaded with
// srvconfig.LoadConfig; the zero Config is containerd's defaults) strictly — unknown keys are
// refused, where containerd only warns — and validates it with its defaults filled in (the
// default work_dir is under c.Root, or containerd's default root). A configuration that
// disables the plugin passes.
func CheckServerConfig(c *srvconfig.Config) error {
	for _, d := range c.DisabledPlugins {
		if d == URI {
			return nil
		}
	}
	cfg, err := DecodeStrict(c.Plugins[URI])
	if err != nil {
		return err
	}
	root := c.Root
	if root == "" {
		root = defaults.DefaultRootDir
	}
	return cfg.withDefaults(filepath.Join(root, URI)).Validate()
}
