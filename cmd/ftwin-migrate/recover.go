package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:      "recover",
		Usage:     "settle a container whose migration was cut short by the migrator's death (the source is left frozen)",
		ArgsUsage: "CONTAINER",
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "peer", Usage: "the target's host name in the PKI"},
			&cli.StringFlag{Name: "hook", Value: "auto", Usage: "the application's migration hook: auto (tell it to carry on if it serves one) or off"},
			&cli.StringFlag{Name: "hook-socket", Value: migrate.DefaultHookSocket, Usage: "the application's hook socket inside the container (an absolute path)"},
			&cli.BoolFlag{Name: "force-thaw", Usage: "thaw the source even if the target agent cannot be asked (only if the target is gone for good)"},
		}, containerdFlags...), pkiFlags...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("recover takes one argument, the container id (got %d)", c.NArg())
			}
			hookMode, err := hookFlags(c)
			if err != nil {
				return err
			}
			tlsCfg, err := pki.ClientConfig(c.String("pki"), hostName(c), c.String("peer"))
			if err != nil && !c.Bool("force-thaw") {
				return err
			}
			client, err := connect(c)
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
