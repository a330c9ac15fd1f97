package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	migrateapi "github.com/ftwin-migrate/ftwin-migrate/api/services/migrate/v1"
	"github.com/ftwin-migrate/ftwin-migrate/hooksock"
	"github.com/ftwin-migrate/ftwin-migrate/internal/agentserver"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/plugin"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
)

// containerdFlags are the global flags, as ctr's: --address and --namespace, before the command.
var containerdFlags = []cli.Flag{
	&cli.StringFlag{Name: "address", Aliases: []string{"a"}, Value: defaultAddress, Usage: "containerd socket", EnvVars: []string{"CONTAINERD_ADDRESS"}},
	&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "default", Usage: "containerd namespace", EnvVars: []string{"CONTAINERD_NAMESPACE"}},
}

const defaultAddress = "/run/containerd/containerd.sock"

var pkiFlags = []cli.Flag{
	&cli.StringFlag{Name: "pki", Value: "/etc/ftwin-migrate/pki", Usage: "directory with ca.crt and this host's HOST.crt/HOST.key (see `certs init`)"},
	&cli.StringFlag{Name: "host", Usage: "this host's name in the PKI (default: hostname)"},
}

func hostName(c *cli.Context) string {
	if h := c.String("host"); h != "" {
		return h
	}
	h, _ := os.Hostname()
	return h
}

// connect connects to the containerd at --address and returns the client and the command's
// context in --namespace, as ctr does. The caller closes the client.
func connect(c *cli.Context) (*containerd.Client, context.Context, error) {
	addr := c.String("address")
	client, err := containerd.New(addr, containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to containerd at %s (is it running? give its socket with --address before the command): %w", addr, err)
	}
	return client, namespaces.WithNamespace(c.Context, c.String("namespace")), nil
}

func receiveCommand() *cli.Command {
	return &cli.Command{
		Name:      "receive",
		Usage:     "run the migration agent on a target host: takes checkpoints over mutual TLS and restores them",
		ArgsUsage: " ",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: ":7443", Usage: "address to serve on"},
			&cli.StringFlag{Name: "work-dir", Value: "/var/lib/ftwin-migrate/agent", Usage: "CRIU config files and restored containers' logs"},
			&cli.DurationFlag{Name: "session-timeout", Value: 2 * time.Minute, Usage: "abort a migration session idle this long"},
			&cli.StringFlag{Name: "cgroup-parent", Usage: "put restored containers at PARENT/NAMESPACE/ID in the cgroup hierarchy (default: the source's path)"},
			&cli.StringSliceFlag{Name: "serve-namespace", Usage: "containerd namespace to restore into and answer about (repeatable; default: any)"},
			&cli.StringSliceFlag{Name: "allow-host-namespace", Usage: "host namespace a restored container may share: network, pid, ipc, uts (repeatable)"},
			&cli.StringSliceFlag{Name: "allow-bind-mount", Usage: "host path (and below) a restored container may bind-mount (repeatable)"},
			&cli.StringSliceFlag{Name: "allow-capability", Usage: "capability beyond containerd's defaults a restored container may hold, e.g. CAP_NET_ADMIN (repeatable)"},
			&cli.BoolFlag{Name: "allow-devices", Usage: "let restored containers have device nodes and device cgroup rules of their own"},
			&cli.StringFlag{Name: "lab", Hidden: true, Usage: "the lab directory of this host (set by `lab up`): containers with addresses of their own get them here"},
		}, pkiFlags...),
		Action: func(c *cli.Context) error {
			host := hostName(c)
			tlsCfg, err := pki.ServerConfig(c.String("pki"), host)
			if err != nil {
				return err
			}
			client, _, err := connect(c)
			if err != nil {
				return err
			}
			defer client.Close()
			policy, err := policyFlags(c)
			if err != nil {
				return err
			}
			cfg := agent.Config{Host: host, Client: client, WorkDir: c.String("work-dir"), SessionTimeout: c.Duration("session-timeout"),
				Log: slog.New(slog.NewTextHandler(os.Stderr, nil)), Policy: policy, Namespaces: c.StringSlice("serve-namespace")}
			if dir := c.String("lab"); dir != "" {
				l, err := lab.Load(filepath.Dir(dir), filepath.Base(dir))
				if err != nil {
					return err
				}
				h, err := l.Host(host)
				if err != nil {
					return err
				}
				cfg.Network = h.Network()
			}
			if parent := c.String("cgroup-parent"); parent != "" {
				cfg.RestoreOpts = func(r agent.SessionRequest) []restore.Opt {
					return []restore.Opt{restore.WithCgroupsPath(path.Join(parent, r.Namespace, r.Container))}
				}
			}
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return fmt.Errorf("listen on %s: %w", c.String("listen"), err)
			}
			srv, err := agentserver.Start(cfg, ln, tlsCfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "ftwin-migrate agent %s (protocol %d) listening on %s\n", host, agent.ProtocolVersion, srv.Addr)
			select {
			case err := <-srv.Done():
				srv.Agent.Close()
				return err
			case <-c.Context.Done():
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
				return nil
			}
		},
	}
}

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:      "migrate",
		Usage:     "live-migrate a running container to the agent at --to",
		ArgsUsage: "CONTAINER",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "to", Required: true, Usage: "target agent address, host:port"},
			&cli.StringFlag{Name: "peer", Usage: "the target's host name in the PKI, checked against its certificate (default: the host of --to, a name or an address its certificate lists)"},
			&cli.StringFlag{Name: "probe", Usage: "http:// URL the target checks before commit, e.g. http://127.0.0.1:8080/healthz"},
			&cli.StringFlag{Name: "tcp", Usage: "established connections on the target: close (clients reconnect) or established (same address); default: established for a container whose address moves with it (a lab container run with --own-address), close otherwise"},
			&cli.DurationFlag{Name: "phase-timeout", Value: 2 * time.Minute, Usage: "roll back if a phase takes longer"},
			&cli.DurationFlag{Name: "settle", Value: 2 * time.Second, Usage: "the restored copy must stay alive (and pass --probe) this long before the commit; 0: no wait"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.StringFlag{Name: "hook", Value: "auto", Usage: "the application's migration hook: auto (use it if the container serves one), required, or off (freeze the application as it is)"},
			&cli.StringFlag{Name: "hook-socket", Value: migrate.DefaultHookSocket, Usage: "the application's hook socket inside the container (an absolute path)"},
			&cli.StringSliceFlag{Name: "brokers", Usage: "Kafka bootstrap servers: check the application's boundary against the group's committed offsets"},
			&cli.DurationFlag{Name: "session-timeout", Value: 45 * time.Second, Usage: "the consumer group's session timeout, for the warning when the expected downtime approaches it"},
			&cli.StringFlag{Name: "mode", Value: "stop-and-copy", Usage: "stop-and-copy (freeze, copy, restore: any application) or replay (snapshot while it runs, catch up from the Kafka log, cut over: a hook of protocol 2 with capability replay)"},
			&cli.Int64Flag{Name: "max-lag", Value: 500, Usage: "replay: cut over once the shadow is this many records behind the source"},
			&cli.DurationFlag{Name: "catch-up-timeout", Value: 2 * time.Minute, Usage: "replay: drop the shadow (the source carries on) if it has not caught up by then"},
			&cli.BoolFlag{Name: "via-containerd", Usage: "ask the ftwin-migrate plugin of the containerd at --address (containerd-ftwin) to run the migration, with its own PKI and host name, instead of running it in this process"},
		}, pkiFlags...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("migrate takes one argument, the container id (got %d)", c.NArg())
			}
			if c.Bool("via-containerd") && (c.IsSet("pki") || c.IsSet("host")) {
				return errors.New("--via-containerd: the plugin migrates with the PKI and host name of its own configuration; --pki and --host do not apply")
			}
			mode, err := migrate.ParseMode(c.String("mode"))
			if err != nil {
				return fmt.Errorf("--mode: %w", err)
			}
			if c.Int64("max-lag") < 0 || c.Duration("catch-up-timeout") <= 0 {
				return fmt.Errorf("--max-lag %d, --catch-up-timeout %v: want a lag of 0 or more records and a positive timeout", c.Int64("max-lag"), c.Duration("catch-up-timeout"))
			}
			var tcp restore.TCPMode // "": the library decides (see migrate.Options.TCP)
			if s := c.String("tcp"); s != "" {
				if tcp, err = restore.ParseTCPMode(s); err != nil {
					return fmt.Errorf("--tcp: %w", err)
				}
			}
			hookMode, err := hookFlags(c)
			if err != nil {
				return err
			}
			host := hostName(c)
			o := migrate.Options{
				Namespace: c.String("namespace"), Container: c.Args().First(), Target: c.String("to"),
				SourceHost: host, TCP: tcp, Probe: c.String("probe"), PhaseTimeout: c.Duration("phase-timeout"), Settle: settle(c.Duration("settle")),
				HookMode: hookMode, HookSocket: c.String("hook-socket"), Brokers: c.StringSlice("brokers"), SessionTimeout: c.Duration("session-timeout"),
				Mode: mode, MaxLag: c.Int64("max-lag"), CatchUpTimeout: c.Duration("catch-up-timeout"),
			}
			if o.MaxLag == 0 {
				o.MaxLag = -1 // the library's default is 500; the flag's 0 means caught up exactly
			}
			// A lab host's containerd: its containers' own addresses move with them.
			if h := labHostOf(c.String("address")); h != nil {
				o.Network = h.Network()
			}
			if !c.Bool("json") && term.IsTerminal(int(os.Stderr.Fd())) {
				var bar *progressbar.ProgressBar
				o.Progress = func(done, total int64) {
					if bar == nil {
						bar = progressbar.DefaultBytes(total, "transfer")
					}
					_ = bar.Set64(done)
				}
				var lagBar *progressbar.ProgressBar
				o.CatchUpProgress = func(s kafkahooks.Status) {
					if lagBar == nil {
						lagBar = progressbar.NewOptions64(max(s.Lag, 1), progressbar.OptionSetDescription("catch-up (records behind the source)"),
							progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
					}
					if s.Lag > lagBar.GetMax64() {
						lagBar.ChangeMax64(s.Lag)
					}
					_ = lagBar.Set64(lagBar.GetMax64() - s.Lag)
					lagBar.Describe(fmt.Sprintf("catch-up: %d records (%v) behind the source, %d replayed", s.Lag, s.LagTime.Round(time.Millisecond), s.Replayed))
				}
			}
			var rep *migrate.Report
			if c.Bool("via-containerd") {
				rep, err = migrateViaContainerd(c, o)
			} else {
				if o.TLS, err = pki.ClientConfig(c.String("pki"), host, peerName(c)); err != nil {
					return err
				}
				client, _, cerr := connect(c)
				if cerr != nil {
					return cerr
				}
				defer client.Close()
				rep, err = migrate.Migrate(c.Context, client, o)
			}
			if rep == nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				_ = enc.Encode(rep)
			} else {
				_ = rep.WriteSummary(os.Stdout)
			}
			return err
		},
	}
}

// migrateViaContainerd asks the plugin on the containerd socket at --address to run the
// migration o describes, with the same progress bars, and returns the report it sent.
func migrateViaContainerd(c *cli.Context, o migrate.Options) (*migrate.Report, error) {
	conn, err := plugin.Dial(c.String("address"))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx := namespaces.WithNamespace(c.Context, o.Namespace)
	return plugin.Migrate(ctx, conn, plugin.Request(o, c.String("peer")), func(ev *migrateapi.MigrateEvent) {
		switch {
		case ev.GetTransfer() != nil && o.Progress != nil:
			o.Progress(ev.GetTransfer().GetDone(), ev.GetTransfer().GetTotal())
		case ev.GetCatchUp() != nil && o.CatchUpProgress != nil:
			cu := ev.GetCatchUp()
			o.CatchUpProgress(kafkahooks.Status{Lag: cu.GetLag(), LagTime: cu.GetLagTime().AsDuration(), Replayed: cu.GetReplayed()})
		}
	})
}

// labHostOf returns the lab host whose containerd listens at address (LAB/hosts/HOST/containerd.sock
// of a lab that is up), or nil.
func labHostOf(address string) *lab.Host {
	hostDir := filepath.Dir(address)
	if filepath.Base(address) != "containerd.sock" || filepath.Base(filepath.Dir(hostDir)) != "hosts" {
		return nil
	}
	labDir := filepath.Dir(filepath.Dir(hostDir))
	l, err := lab.Load(filepath.Dir(labDir), filepath.Base(labDir))
	if err != nil {
		return nil
	}
	h, err := l.Host(filepath.Base(hostDir))
	if err != nil || h.Address() != address {
		return nil
	}
	return h
}

// settle maps --settle 0 (no wait) to the library's "none".
func settle(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// peerName is --peer, or else the host of --to: the agent's certificate must be issued for it.
func peerName(c *cli.Context) string {
	if p := c.String("peer"); p != "" {
		return p
	}
	if h, _, err := net.SplitHostPort(c.String("to")); err == nil {
		return h
	}
	return c.String("to")
}

// policyFlags reads the --allow-* flags of receive.
func policyFlags(c *cli.Context) (agent.Policy, error) {
	p := agent.Policy{BindMounts: c.StringSlice("allow-bind-mount"), Capabilities: c.StringSlice("allow-capability"), Devices: c.Bool("allow-devices")}
	for _, ns := range c.StringSlice("allow-host-namespace") {
		switch t := specs.LinuxNamespaceType(ns); t {
		case specs.NetworkNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace:
			p.HostNamespaces = append(p.HostNamespaces, t)
		default:
			return p, fmt.Errorf("--allow-host-namespace %q: want network, pid, ipc or uts (a restored container always has a mount namespace of its own)", ns)
		}
	}
	for _, b := range p.BindMounts {
		if !path.IsAbs(b) {
			return p, fmt.Errorf("--allow-bind-mount %q: want an absolute host path", b)
		}
	}
	return p, nil
}

// hookFlags reads --hook and checks --hook-socket.
func hookFlags(c *cli.Context) (migrate.HookMode, error) {
	mode, err := migrate.ParseHookMode(c.String("hook"))
	if err != nil {
		return 0, fmt.Errorf("--hook: %w", err)
	}
	if c.String("hook-socket") == "none" {
		return 0, errors.New(`--hook-socket none is gone: use --hook off to freeze the application as it is`)
	}
	if err := hooksock.CheckSocket(c.String("hook-socket")); err != nil {
		return 0, fmt.Errorf("--hook-socket: %w", err)
	}
	return mode, nil
}

func certsCommand() *cli.Command {
	return &cli.Command{
		Name:  "certs",
		Usage: "mutual-TLS certificates for agents and migrators",
		Subcommands: []*cli.Command{{
			Name:  "init",
			Usage: "create a CA (if absent) and a certificate for each --host; existing files are kept",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Value: "/etc/ftwin-migrate/pki", Usage: "where ca.crt, ca.key, HOST.crt and HOST.key go"},
				&cli.StringSliceFlag{Name: "host", Required: true, Usage: "host name, optionally with addresses: NAME[=IP,IP...] (repeatable)"},
			},
			Action: func(c *cli.Context) error {
				var hosts []pki.Host
				for _, spec := range c.StringSlice("host") {
					h, err := parseHostSpec(spec)
					if err != nil {
						return err
					}
					hosts = append(hosts, h)
				}
				if err := pki.Init(c.String("dir"), hosts); err != nil {
					return err
				}
				fmt.Printf("certificates for %d host(s) in %s\n", len(hosts), c.String("dir"))
				return nil
			},
		}},
	}
}

// parseHostSpec reads NAME or NAME=IP,IP.
func parseHostSpec(s string) (pki.Host, error) {
	name, ips, _ := strings.Cut(s, "=")
	h := pki.Host{Name: name}
	if ips == "" {
		return h, nil
	}
	for _, ip := range strings.Split(ips, ",") {
		p := net.ParseIP(ip)
		if p == nil {
			return h, fmt.Errorf("--host %s: %q is not an IP address", s, ip)
		}
		h.IPs = append(h.IPs, p)
	}
	return h, nil
}
