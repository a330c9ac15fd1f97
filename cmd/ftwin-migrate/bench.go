package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/bench"
	"github.com/ftwin-migrate/ftwin-migrate/broker"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure migration downtime of the twin: ftwin-migrate beside containerd checkpoint/copy/restore, a Kafka-native restart and the CRIU floor, in one run",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "short", Usage: "the CI version: 16 MiB state only, both links"},
			&cli.IntSliceFlag{Name: "state-mib", Value: cli.NewIntSlice(16, 128, 512), Usage: "twin state sizes"},
			&cli.BoolFlag{Name: "with-1gib", Usage: "add a 1024 MiB state"},
			&cli.IntSliceFlag{Name: "link-mbit", Value: cli.NewIntSlice(0, 100), Usage: "host link rates (0: unthrottled)"},
			&cli.StringSliceFlag{Name: "method", Usage: "methods to run (default: all): " + fmt.Sprint(bench.Methods)},
			&cli.Float64Flag{Name: "rate", Value: 200, Usage: "sensor events per second"},
			&cli.StringFlag{Name: "broker", Value: "kfake", Usage: "the labs' Kafka: kfake or apache"},
			&cli.StringFlag{Name: "twin", Usage: "static twin binary (default: twin beside this executable)"},
			&cli.StringFlag{Name: "out", Value: "results", Usage: "directory for bench.json, bench.md and bench.svg"},
		},
		Action: func(c *cli.Context) error {
			twin, err := besideExecutable(c, "twin", "twin")
			if err != nil {
				return err
			}
			kind, err := broker.ParseKind(c.String("broker"))
			if err != nil {
				return err
			}
			cfg := bench.Config{StateMiB: c.IntSlice("state-mib"), LinksMbit: c.IntSlice("link-mbit"), Methods: c.StringSlice("method"),
				Rate: c.Float64("rate"), TwinBinary: twin, Broker: kind, Log: os.Stderr}
			if c.Bool("short") {
				cfg.StateMiB = []int{16}
			}
			if c.Bool("with-1gib") {
				cfg.StateMiB = append(cfg.StateMiB, 1024)
			}
			for _, m := range cfg.Methods {
				if !contains(bench.Methods, m) {
					return fmt.Errorf("--method %q: want one of %v", m, bench.Methods)
				}
			}
			res, err := bench.Measure(c.Context, cfg)
			if res != nil {
				if werr := res.Write(c.String("out")); werr != nil {
					return werr
				}
				_ = res.WriteMarkdown(os.Stdout)
				fmt.Printf("\nwritten to %s (bench.json, bench.md, bench.svg)\n", c.String("out"))
			}
			if err != nil {
				return err
			}
			if !res.OK() {
				return fmt.Errorf("a run failed, or lost or duplicated events (see the table)")
			}
			return nil
		},
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
