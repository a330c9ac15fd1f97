package main

import (
	"errors"
	"fmt"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/urfave/cli/v2"

	migrateapi "github.com/ftwin-migrate/ftwin-migrate/api/services/migrate/v1"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/plugin"
)

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:      "recover",
		Usage:     "settle a container whose migration was cut short by the migrator's death (the source is left frozen)",
		ArgsUsage: "CONTAINER",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "peer", Usage: "the target's host name in the PKI"},
			&cli.StringFlag{Name: "hook", Value: "auto", Usage: "the application's migration hook: auto (tell it to carry on if it serves one) or off"},
			&cli.StringFlag{Name: "hook-socket", Value: migrate.DefaultHookSocket, Usage: "the application's hook socket inside the container (an absolute path)"},
			&cli.BoolFlag{Name: "force-thaw", Usage: "thaw the source even if the target agent cannot be asked (only if the target is gone for good)"},
			&cli.BoolFlag{Name: "via-containerd", Usage: "ask the ftwin-migrate plugin of the containerd at --address (containerd-ftwin) to recover, with its own PKI and host name"},
		}, pkiFlags...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("recover takes one argument, the container id (got %d)", c.NArg())
			}
			hookMode, err := hookFlags(c)
			if err != nil {
				return err
			}
			if c.Bool("via-containerd") {
				if c.IsSet("pki") || c.IsSet("host") {
					return errors.New("--via-containerd: the plugin recovers with the PKI and host name of its own configuration; --pki and --host do not apply")
				}
				conn, err := plugin.Dial(c.String("address"))
				if err != nil {
					return err
				}
				defer conn.Close()
				res, err := migrateapi.NewMigrateClient(conn).Recover(namespaces.WithNamespace(c.Context, c.String("namespace")), &migrateapi.RecoverRequest{
					ContainerId: c.Args().First(), Peer: c.String("peer"), Hook: hookMode.String(), HookSocket: c.String("hook-socket"), ForceThaw: c.Bool("force-thaw"),
				})
				if err != nil {
					return fmt.Errorf("recover %s through containerd's plugin %s: %w", c.Args().First(), plugin.URI, errgrpc.ToNative(err))
				}
				fmt.Println(res.GetOutcome())
				return nil
			}
			tlsCfg, err := pki.ClientConfig(c.String("pki"), hostName(c), c.String("peer"))
			if err != nil && !c.Bool("force-thaw") {
				return err
			}
			client, _, err := connect(c)
			if err != nil {
				return err
			}
			defer client.Close()
			what, err := migrate.Recover(c.Context, client, migrate.RecoverOptions{
				Namespace: c.String("namespace"), Container: c.Args().First(), TLS: tlsCfg,
				HookMode: hookMode, HookSocket: c.String("hook-socket"), ForceThaw: c.Bool("force-thaw"),
			})
			if err != nil {
				return err
			}
			fmt.Println(what)
			return nil
		},
	}
}
