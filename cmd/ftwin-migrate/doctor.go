package main

import (
	"encoding/json"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/doctor"
)

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check what this host offers for checkpoint/restore and migration; exits non-zero on a blocker",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "checkpoint-dir", Usage: "directory where checkpoints are written (free-space check)", Value: os.TempDir()},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		},
		Action: func(c *cli.Context) error {
			opts := []doctor.Opt{doctor.WithCheckpointDir(c.String("checkpoint-dir"))}
			// The global --address: without it the system daemon's is checked, and is optional.
			if c.IsSet("address") {
				opts = append(opts, doctor.WithContainerdAddress(c.String("address")))
			}
			r := doctor.Run(c.Context, opts...)
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else if err := r.WriteTable(os.Stdout); err != nil {
				return err
			}
			if len(r.Blockers()) > 0 {
				return exitError{code: 2}
			}
			return nil
		},
	}
}
