package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/internal/agentserver"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
)

// AgentPort is where a lab host's migration agent listens, on the host's address.
const AgentPort = 7443

// RunningAgent is a migration agent served in this process from inside a host's network
// namespace.
type RunningAgent struct {
	*agentserver.Server
	client *containerd.Client
}

// AgentConfig returns the agent configuration a lab host needs: its containerd, a per-host
// cgroup path for restored containers, logs where LogPath says and probes dialled from the host.
func (h *Host) AgentConfig(client *containerd.Client) agent.Config {
	return agent.Config{
		Host:    h.Name,
		Client:  client,
		WorkDir: filepath.Join(h.Dir, "agent"),
		LogPath: func(_, id string) string { return h.LogPath(id) },
		RestoreOpts: func(r agent.SessionRequest) []restore.Opt {
			return []restore.Opt{restore.WithCgroupsPath(h.CgroupsPath(r.Namespace, r.Container))}
		},
		Dial: h.DialContext,
		// Lab workloads live in one namespace, on their host's network (see Run).
		Namespaces: []string{Namespace},
		Policy:     agent.Policy{HostNamespaces: []specs.LinuxNamespaceType{specs.NetworkNamespace}},
		// Containers with addresses of their own get them here too.
		Network: h.Network(),
	}
}

// StartAgent serves a migration agent for the host on HOSTIP:AgentPort, with its certificate
// from pkiDir (see pki.Init). Stop it with Close.
func (h *Host) StartAgent(ctx context.Context, pkiDir string, edit func(*agent.Config)) (*RunningAgent, error) {
	tlsCfg, err := pki.ServerConfig(pkiDir, h.Name)
	if err != nil {
		return nil, err
	}
	client, err := h.Client()
	if err != nil {
		return nil, err
	}
	cfg := h.AgentConfig(client)
	cfg.Log = slog.New(slog.DiscardHandler)
	if edit != nil {
		edit(&cfg)
	}
	addr := net.JoinHostPort(h.IP, fmt.Sprint(AgentPort))
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("lab: agent of host %s: %w", h.Name, err)
	}
	srv, err := agentserver.Start(cfg, ln, tlsCfg)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("lab: agent of host %s: %w", h.Name, err)
	}
	return &RunningAgent{Server: srv, client: client}, nil
}

// Kill stops serving at once, as a killed agent process would: connections are cut and open
// sessions are left as they are.
func (r *RunningAgent) Kill() error { return errors.Join(r.Server.Kill(), r.client.Close()) }

// Close stops serving (cutting open connections, as a killed agent would) and aborts open sessions.
func (r *RunningAgent) Close() error { return errors.Join(r.Server.Close(), r.client.Close()) }
