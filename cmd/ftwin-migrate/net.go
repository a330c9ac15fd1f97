package main

import (
	"fmt"
	"net/netip"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/netmove"
)

// bridgeFlag names the Linux bridge containers with addresses of their own are attached to.
var bridgeFlag = &cli.StringFlag{Name: "bridge", Usage: "Linux bridge on the network the hosts share (its uplink a port of it) that containers with addresses of their own join (see `net attach`): their addresses move with them, and their TCP connections carry on"}

func netCommand() *cli.Command {
	return &cli.Command{
		Name:  "net",
		Usage: "addresses of their own for containers on a real host, which move with them (the lab does this itself: lab run --own-address)",
		Subcommands: []*cli.Command{
			{
				Name:      "attach",
				Usage:     "make network namespace /run/netns/ftwin-ID with address IP on --bridge, for a container to join (ctr run --with-ns network:PATH)",
				ArgsUsage: "ID",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "bridge", Required: true, Usage: bridgeFlag.Usage},
					&cli.StringFlag{Name: "ip", Required: true, Usage: "the container's address with the network's prefix length, such as 192.168.1.100/24"},
					&cli.StringFlag{Name: "mac", Usage: "its MAC (default: 02:fa followed by the IPv4 address)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("net attach takes one argument, the container id (got %d)", c.NArg())
					}
					p, err := netip.ParsePrefix(c.String("ip"))
					if err != nil || !p.Addr().Is4() {
						return fmt.Errorf("--ip %q: want an IPv4 address with its prefix length, such as 192.168.1.100/24", c.String("ip"))
					}
					mac := c.String("mac")
					if mac == "" {
						mac = netmove.MACFor(p.Addr()).String()
					}
					n, err := netmove.ParseAddress(agent.ContainerAddress{IP: p.String(), MAC: mac})
					if err != nil {
						return err
					}
					path, err := netmove.Bridge{Name: c.String("bridge")}.Attach(c.Context, c.Args().First(), n, true)
					if err != nil {
						return err
					}
					fmt.Printf("%s: %s (MAC %s) on %s\nrun the container in it: ctr run --with-ns network:%s ...\n", path, n.Prefix, n.MAC, c.String("bridge"), path)
					return nil
				},
			},
			{
				Name:      "detach",
				Usage:     "remove the network namespace of container ID (after the container is gone)",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("net detach takes one argument, the container id (got %d)", c.NArg())
					}
					return netmove.Bridge{Name: "-"}.Detach(c.Context, c.Args().First())
				},
			},
		},
	}
}
