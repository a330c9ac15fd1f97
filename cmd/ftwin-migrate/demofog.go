package main

import (
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/scenario/fog"
)

func runFogDemo(c *cli.Context) error {
	twin, err := besideExecutable(c, "twin", "twin")
	if err != nil {
		return err
	}
	kind, err := broker.ParseKind(c.String("broker"))
	if err != nil {
		return err
	}
	if len(c.StringSlice("brokers")) > 0 {
		return fmt.Errorf("--scenario fog runs on the lab's own broker: --brokers is not supported")
	}
	cfg := fog.Config{
		Lab:        lab.Config{Name: c.String("name"), Subnet: c.String("subnet"), Broker: kind},
		TwinBinary: twin, Twins: c.Int("twins"), Rate: c.Float64("rate"), HostCores: c.Float64("host-cores"),
		Say: func(e fog.Event) { fmt.Printf("%s  %s\n", e.Time.Format("15:04:05.000"), e.What) },
	}
	if !c.IsSet("rate") {
		cfg.Rate = 20
	}
	if p := c.String("policy"); p != "" {
		if cfg.Policy, err = placement.Load(p); err != nil {
			return err
		}
	}
	if os.Getenv("FTWIN_DEBUG") != "" {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	res, err := fog.Run(c.Context, cfg)
	if err != nil {
		return err
	}
	f, err := os.Create(c.String("picture"))
	if err != nil {
		return fmt.Errorf("write the picture: %w", err)
	}
	if err := res.Picture(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	printFog(res)
	fmt.Printf("\npicture of placement and latency over time: %s\n", c.String("picture"))
	if !res.OK() {
		return exitError{code: 3}
	}
	return nil
}

func printFog(r fog.Result) {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TWIN\tFROM\tTO\tBY\tRULE\tRESULT\tSTREAM GAP\tTOOK\tERROR")
	for _, m := range r.Moves {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%v\t%s\n", m.Twin, m.From, m.To, m.By, m.Rule, m.Result, m.StreamGap.Round(time.Millisecond), m.End.Sub(m.Start).Round(time.Millisecond), m.Err)
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TWIN\tEVENTS IN\tOUT\tLOST\tDUPLICATED\tOK")
	for _, v := range r.Verdicts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%v\n", v.Twin, v.In, v.Report.EventsOut, v.Report.Lost, v.Report.Duplicated, v.OK())
	}
	tw.Flush()
	fmt.Printf("\nrule firing → last fog1 twin on the cloud: %v; load gone → first return decision → last twin home: %v; fog2 drained in %v\n",
		r.Reaction.Round(time.Millisecond), r.Return.Round(time.Millisecond), r.DrainTook.Round(time.Millisecond))
	fmt.Printf("migrations: %d, at most %d ended within one minute; flapping: %d %v\n", len(r.Moves), r.PerMinute, len(r.Flaps), r.Flaps)
}
