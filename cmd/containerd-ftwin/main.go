// Command containerd-ftwin is the stock containerd 2.x daemon — containerd's own command
// (github.com/containerd/containerd/v2/cmd/containerd/command) with its built-in plugins — plus
// the ftwin-migrate plugin (package plugin): migration served on containerd's own socket. It
// takes containerd's flags and config.toml; the plugin's section is
// [plugins."io.containerd.grpc.v1.ftwin-migrate"] (see docs/PLUGIN.md).
//
// Before the daemon starts, the plugin's section is checked strictly (unknown keys included)
// and a bad one is refused with the reason: containerd itself would only log that the plugin
// failed to load and run without it.
//
// Build it as hack/install.sh does: CGO_ENABLED=0 go build -tags no_btrfs ./cmd/containerd-ftwin.
package main

import (
	"context"
	"fmt"
	"iter"
	"os"
	"slices"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	ctrdplugin "github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/urfave/cli/v3"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"

	"github.com/ftwin-migrate/ftwin-migrate/plugin"
)

func main() {
	ctx := context.Background()
	app := command.App()
	app.Name = "containerd-ftwin"
	serve := app.Action
	app.Action = func(ctx context.Context, cmd *cli.Command) error {
		if cmd.Args().First() == "" {
			if err := checkConfig(ctx, cmd); err != nil {
				return err
			}
		}
		return serve(ctx, cmd)
	}
	if err := app.Run(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd-ftwin:", err)
		os.Exit(1)
	}
}

// checkConfig loads the configuration as containerd's command does (the file at --config if
// it exists or was given, with the plugins' migrations; else containerd's defaults, and so the
// plugin's), applies --root, and checks the plugin's section.
func checkConfig(ctx context.Context, cmd *cli.Command) error {
	path := cmd.String("config")
	var cfg srvconfig.Config
	if _, err := os.Stat(path); !os.IsNotExist(err) || cmd.IsSet("config") {
		g := registry.Graph(func(*ctrdplugin.Registration) bool { return false })
		regs := func() iter.Seq[ctrdplugin.Registration] { return slices.Values(g) }
		if err := srvconfig.LoadConfigWithPlugins(ctx, path, regs, &cfg); err != nil {
			return err
		}
	} else {
		path = "the default configuration (no " + path + ")"
	}
	if cmd.IsSet("root") {
		cfg.Root = cmd.String("root")
	}
	if err := plugin.CheckServerConfig(&cfg); err != nil {
		return fmt.Errorf("%s: %w (or disable the plugin: disabled_plugins = [%q])", path, err, plugin.URI)
	}
	return nil
}
