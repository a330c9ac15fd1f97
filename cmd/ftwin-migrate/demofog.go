package main

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
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
	if d := c.Duration("oscillate"); d > 0 {
		cfg.Oscillate = fog.Oscillation{Total: d, Fast: c.Duration("fast-period"), FastFor: c.Duration("fast-for"), Slow: c.Duration("period")}
		if cfg.Oscillate.Fast <= 0 || cfg.Oscillate.Slow <= 0 || cfg.Oscillate.FastFor < 0 || cfg.Oscillate.FastFor > d {
			return fmt.Errorf("--oscillate %v: want --fast-period and --period above 0 and --fast-for between 0 and %v", d, d)
		}
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
	if res.Osc != nil {
		printOscillation(res, cfg.Oscillate)
	}
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
	if r.Osc != nil {
		return // printOscillation says the rest
	}
	fmt.Printf("\nrule firing → last fog1 twin on the cloud: %v; load gone → first return decision → last twin home: %v; fog2 drained in %v\n",
		r.Reaction.Round(time.Millisecond), r.Return.Round(time.Millisecond), r.DrainTook.Round(time.Millisecond))
	fmt.Printf("migrations: %d, at most %d ended within one minute; flapping: %d %v\n", len(r.Moves), r.PerMinute, len(r.Flaps), r.Flaps)
}

func printOscillation(r fog.Result, o fog.Oscillation) {
	rep := r.Osc
	fastFor := o.FastFor
	if fastFor == 0 {
		fastFor = o.Total / 5
	}
	fmt.Printf("\noscillation: load on fog1 for %v (on/off every %v for %v, then every %v), %d flips, %v from the first flip to the last migration\n",
		o.Total, o.Fast, fastFor, o.Slow, rep.Flips, rep.End.Sub(rep.Start).Round(time.Second))
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE FIRED\tRULE\tLOAD FLIP→FIRED\tTWINS\tMOVED\tFIRED→LAST TWIN MOVED")
	for _, f := range rep.Firings {
		flip := "-"
		if !f.Flip.IsZero() {
			flip = f.Fired.Sub(f.Flip).Round(time.Millisecond).String()
		}
		took := "-"
		if len(f.Moved) > 0 {
			took = f.Took().Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", f.Fired.Format("15:04:05.000"), f.Rule, flip, len(f.Twins), len(f.Moved), took)
	}
	tw.Flush()
	took := map[string][]time.Duration{}
	var rules []string
	for _, f := range rep.Firings {
		if len(f.Moved) > 0 {
			if took[f.Rule] == nil {
				rules = append(rules, f.Rule)
			}
			took[f.Rule] = append(took[f.Rule], f.Took())
		}
	}
	for _, rule := range rules {
		ts := took[rule]
		slices.Sort(ts)
		fmt.Printf("%s fired → last twin moved: %v to %v over %d firings (median %v)\n", rule, ts[0].Round(time.Second), ts[len(ts)-1].Round(time.Second), len(ts), ts[len(ts)/2].Round(time.Second))
	}
	gaps := map[string][]time.Duration{}
	for _, m := range r.Moves {
		if m.By == "demo" && m.Err == "" {
			gaps[m.Twin] = append(gaps[m.Twin], m.StreamGap)
		}
	}
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TWIN\tMIGRATIONS\tSTREAM GAPS")
	for _, v := range r.Verdicts {
		var gs []string
		for _, g := range gaps[v.Twin] {
			gs = append(gs, g.Round(100*time.Millisecond).String())
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", v.Twin, rep.PerTwin[v.Twin], strings.Join(gs, " "))
	}
	tw.Flush()
	fmt.Printf("\ncontroller migrations during the oscillation: %d committed, %d rolled back\n", rep.Migrations, rep.RolledBack)
	fmt.Printf("migrations per minute: %.1f over the oscillation, %.1f while the rules' firings were busy, at most %d ending within one minute\n",
		rep.PerMinute, rep.BusyPerMinute, rep.MaxPerMinute)
	if len(rep.Flaps) == 0 {
		fmt.Println("flapping: none (no twin moved again within the cooldown or out and back within a fast flip)")
	} else {
		fmt.Printf("flapping: %d\n  %s\n", len(rep.Flaps), strings.Join(rep.Flaps, "\n  "))
	}
	ok := 0
	for _, v := range r.Verdicts {
		if v.OK() {
			ok++
		}
	}
	fmt.Printf("twins exactly once (0 lost, 0 duplicated, every event out): %d of %d\n", ok, len(r.Verdicts))
	if r.Unsettled != "" {
		fmt.Printf("after the oscillation: %s\n", r.Unsettled)
	}
}
