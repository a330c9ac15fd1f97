package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/ftwin-migrate/ftwin-migrate/fleet"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
)

// fleetFlags address a lab's fleet and its placement state.
var fleetFlags = append([]cli.Flag{
	&cli.StringSliceFlag{Name: "brokers", Usage: "Kafka bootstrap servers holding the placement state (default: the lab's broker)"},
	&cli.StringFlag{Name: "state-topic", Value: placestate.DefaultTopic, Usage: "the compacted topic of the placement state"},
}, labFlags...)

// openFleet loads the lab of --name/--base-dir, its fleet and the placement state's store.
func openFleet(c *cli.Context, opts ...placestate.Option) (*fleet.Fleet, *placestate.Store, error) {
	l, err := lab.Load(c.String("base-dir"), c.String("name"))
	if err != nil {
		return nil, nil, err
	}
	brokers := c.StringSlice("brokers")
	if len(brokers) == 0 {
		if l.BrokerAddr == "" {
			return nil, nil, fmt.Errorf("lab %s has no broker: give --brokers", l.Name)
		}
		brokers = []string{l.BrokerAddr}
	}
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	defer cancel()
	store, err := placestate.Open(ctx, brokers, append([]placestate.Option{placestate.WithTopic(c.String("state-topic"))}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	return fleet.New(l, brokers), store, nil
}

func hostArg(c *cli.Context, cmd string) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%s takes one argument, the host (got %d)", cmd, c.NArg())
	}
	return c.Args().First(), nil
}

func cordonCommands() []*cli.Command {
	cordon := func(on bool) cli.ActionFunc {
		return func(c *cli.Context) error {
			name := map[bool]string{true: "cordon", false: "uncordon"}[on]
			host, err := hostArg(c, name)
			if err != nil {
				return err
			}
			f, store, err := openFleet(c)
			if err != nil {
				return err
			}
			defer store.Close()
			if _, err := f.Lab.Host(host); err != nil {
				return err
			}
			if on {
				err = fleet.Cordon(c.Context, store, host, c.String("reason"))
			} else {
				err = fleet.Uncordon(c.Context, store, host)
			}
			if err != nil {
				return err
			}
			fmt.Printf("%s %sed (state in %s)\n", host, name, store.Topic())
			return nil
		}
	}
	return []*cli.Command{
		{Name: "cordon", Usage: "mark a lab host so that no twin is placed there (recorded in the placement state)", ArgsUsage: "HOST",
			Flags: append([]cli.Flag{&cli.StringFlag{Name: "reason", Value: "cordon", Usage: "why, for the record"}}, fleetFlags...), Action: cordon(true)},
		{Name: "uncordon", Usage: "let a cordoned lab host take twins again", ArgsUsage: "HOST", Flags: fleetFlags, Action: cordon(false)},
	}
}

func drainCommand() *cli.Command {
	return &cli.Command{
		Name:      "drain",
		Usage:     "cordon a lab host and live-migrate every twin off it, to targets the policy chooses",
		ArgsUsage: "HOST",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "policy", Required: true, Usage: "the placement policy (YAML): its hosts, headroom and drain targets"},
			&cli.IntFlag{Name: "concurrency", Value: 2, Usage: "migrations at once"},
			&cli.Float64Flag{Name: "host-cores", Value: 1, Usage: "CPU of each simulated host, in cores (for the headroom's CPU figures)"},
		}, fleetFlags...),
		Action: func(c *cli.Context) error {
			host, err := hostArg(c, "drain")
			if err != nil {
				return err
			}
			p, err := placement.Load(c.String("policy"))
			if err != nil {
				return err
			}
			if c.Int("concurrency") < 1 {
				return fmt.Errorf("--concurrency %d: want 1 or more", c.Int("concurrency"))
			}
			f, store, err := openFleet(c)
			if err != nil {
				return err
			}
			defer store.Close()
			res, err := f.Drain(c.Context, store, p, host, fleet.DrainOptions{
				Concurrency: c.Int("concurrency"), Measure: fleet.MeasureConfig{HostCores: c.Float64("host-cores")},
				Plan: func(r placement.Result) {
					fmt.Printf("draining %s: %d twins to move, %d without a target\n", host, len(r.Decisions), len(r.Blocked))
					for _, d := range r.Decisions {
						fmt.Printf("  %s → %s (%s)\n", d.Twin, d.To, d.Target)
					}
				},
				Progress: drainProgress(os.Stderr),
			})
			if err != nil {
				return err
			}
			printDrain(os.Stdout, res)
			if len(res.Stayed) > 0 {
				return exitError{code: 3}
			}
			return nil
		},
	}
}

// drainProgress shows the migrations as they run: a bar on a terminal, lines otherwise.
func drainProgress(w *os.File) func(fleet.Progress) {
	var bar *progressbar.ProgressBar
	tty := term.IsTerminal(int(w.Fd()))
	running := 0
	return func(p fleet.Progress) {
		if !p.Done {
			running++
		} else if !p.Result.Start.IsZero() {
			running--
		}
		line := fmt.Sprintf("%s %s→%s started", p.Decision.Twin, p.Decision.From, p.Decision.To)
		if p.Done {
			line = fmt.Sprintf("%s %s→%s %s in %v", p.Decision.Twin, p.Decision.From, p.Decision.To, p.Result.Result(), p.Result.End.Sub(p.Result.Start).Round(time.Millisecond))
			if p.Result.Err != nil {
				line += ": " + p.Result.Err.Error()
			}
		}
		if !tty {
			fmt.Fprintf(w, "[%d/%d] %s\n", p.Finished, p.Total, line)
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions(p.Total, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
		}
		_ = bar.Set(p.Finished)
		bar.Describe(fmt.Sprintf("%d migrating; %s", running, line))
	}
}

func printDrain(w io.Writer, r fleet.DrainResult) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TWIN\tFROM\tTARGET\tRESULT\tSTREAM GAP\tDOWNTIME\tTOOK\tERROR")
	for _, m := range r.Moves {
		down := "-"
		if m.Report != nil && m.Report.Downtime > 0 {
			down = m.Report.Downtime.Round(time.Millisecond).String()
		}
		gap := "-"
		if m.StreamGap > 0 {
			gap = m.StreamGap.Round(time.Millisecond).String()
		}
		errs := ""
		if m.Err != nil {
			errs = m.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", m.Twin, m.From, m.To, m.Result(), gap, down, m.End.Sub(m.Start).Round(time.Millisecond), errs)
	}
	for _, b := range r.Blocked {
		fmt.Fprintf(tw, "%s\t%s\t-\tstays\t-\t-\t-\t%s\n", b.Twin, b.From, b.Reason)
	}
	tw.Flush()
	if len(r.Stayed) > 0 {
		fmt.Fprintf(w, "\n%s is cordoned; %d twin(s) stay on it: %v\n", r.Host, len(r.Stayed), r.Stayed)
	} else {
		fmt.Fprintf(w, "\n%s is cordoned and holds no twin; `ftwin-migrate uncordon %s` when it may take twins again\n", r.Host, r.Host)
	}
}

func controllerCommand() *cli.Command {
	return &cli.Command{
		Name:  "controller",
		Usage: "measure a lab's twins and hosts, evaluate the placement policy and live-migrate twins as it says (state in Kafka; the newest controller fences the others)",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "policy", Required: true, Usage: "the placement policy (YAML)"},
			&cli.StringFlag{Name: "instance", Value: hostnameOr("controller"), Usage: "this controller's name in the records"},
			&cli.StringFlag{Name: "transactional-id", Value: fleet.DefaultTransactionalID, Usage: "Kafka transactional id the state is written under: a controller opened with the same id fences this one"},
			&cli.Float64Flag{Name: "host-cores", Value: 1, Usage: "CPU of each simulated host, in cores (a host's CPU signal is its processes' CPU over this)"},
			&cli.DurationFlag{Name: "latency-window", Value: 10 * time.Second, Usage: "the window of the latency p99"},
			&cli.DurationFlag{Name: "resolve-after", Value: 2 * time.Minute, Usage: "settle a migration another controller left in flight after this long (recover a frozen source)"},
		}, fleetFlags...),
		Action: func(c *cli.Context) error {
			p, err := placement.Load(c.String("policy"))
			if err != nil {
				return err
			}
			f, store, err := openFleet(c)
			if err != nil {
				return err
			}
			store.Close() // the controller opens its own, transactional
			if ok, what := fleet.PSIPerCgroup(); !ok {
				fmt.Fprintf(os.Stderr, "pressure: %s\n", what)
			}
			ctl, err := f.NewController(c.Context, fleet.ControllerConfig{
				Policy: p, Name: c.String("instance"), TransactionalID: c.String("transactional-id"), StateTopic: c.String("state-topic"),
				Measure:      fleet.MeasureConfig{HostCores: c.Float64("host-cores"), Window: c.Duration("latency-window")},
				ResolveAfter: c.Duration("resolve-after"),
				Log:          slog.New(slog.NewTextHandler(os.Stderr, nil)),
			})
			if err != nil {
				return err
			}
			return ctl.Run(c.Context)
		},
	}
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}
