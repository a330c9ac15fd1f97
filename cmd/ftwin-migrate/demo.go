package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "live-migrate a digital twin under sensor load cloud→fog→cloud and prove no event was lost or duplicated",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "broker", Value: "kfake", Usage: "the lab's Kafka: kfake (embedded) or apache (real Kafka 4.x; the default with --twin streams)"},
			&cli.StringSliceFlag{Name: "brokers", Usage: "use this existing Kafka cluster instead (reachable from the lab's hosts)"},
			&cli.IntFlag{Name: "state-mib", Value: 64, Usage: "the twin's in-memory state (16 to 1024)"},
			&cli.Float64Flag{Name: "rate", Value: 200, Usage: "sensor events per second"},
			&cli.DurationFlag{Name: "dwell", Value: 3 * time.Second, Usage: "time the twin runs on each host between migrations"},
			&cli.StringFlag{Name: "twin", Usage: "static twin binary (default: twin beside this executable), or `streams` for the Kafka Streams twin (twins/streams, built by `make java`)"},
			&cli.StringFlag{Name: "streams-app", Usage: "with --twin streams: the Streams twin's application directory (default: " + scenario.StreamsAppDir + " here or beside bin/)"},
			&cli.IntFlag{Name: "commit-interval-ms", Usage: "with --twin streams: its commit.interval.ms (default: Kafka Streams' 100 for exactly-once)"},
			&cli.StringFlag{Name: "name", Value: "demo", Usage: "lab name"},
			&cli.StringFlag{Name: "subnet", Value: "10.231.50.0/24", Usage: "the lab's IPv4 /24"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			&cli.StringFlag{Name: "scenario", Value: "twin", Usage: "twin (one twin cloud→fog→cloud) or fog (a dozen twins, a placement controller, fog1 loaded and relieved, fog2 drained)"},
			&cli.StringFlag{Name: "policy", Usage: "fog: the placement policy (default: the scenario's own)"},
			&cli.IntFlag{Name: "twins", Value: 12, Usage: "fog: the number of twins (half at each fog host)"},
			&cli.StringFlag{Name: "picture", Value: "fog-demo.svg", Usage: "fog: where the SVG of placement and latency over time goes"},
			&cli.Float64Flag{Name: "host-cores", Value: 0.5, Usage: "fog: CPU of each simulated host, in cores"},
			&cli.DurationFlag{Name: "oscillate", Usage: "fog: instead of the story, switch real CPU load on fog1 on and off for this long with the controller running, and report migrations, firings and flapping"},
			&cli.DurationFlag{Name: "fast-period", Value: 4 * time.Second, Usage: "fog --oscillate: the load's on/off time in the fast part"},
			&cli.DurationFlag{Name: "fast-for", Usage: "fog --oscillate: how long the fast part lasts (default: a fifth of --oscillate)"},
			&cli.DurationFlag{Name: "period", Value: 60 * time.Second, Usage: "fog --oscillate: the load's on/off time after the fast part"},
		},
		Action: func(c *cli.Context) error {
			switch c.String("scenario") {
			case "twin":
				return runDemo(c)
			case "fog":
				return runFogDemo(c)
			}
			return fmt.Errorf("--scenario %q: want twin or fog", c.String("scenario"))
		},
	}
}

func runDemo(c *cli.Context) error {
	say := func(format string, a ...any) {
		if !c.Bool("json") {
			fmt.Printf(format+"\n", a...)
		}
	}
	ctx := c.Context
	cfg := scenario.Config{
		Lab:     lab.Config{Name: c.String("name"), Hosts: []string{"cloud", "fog"}, Subnet: c.String("subnet")},
		Brokers: c.StringSlice("brokers"), StateMiB: c.Int("state-mib"), Rate: c.Float64("rate"),
	}
	brokerKind := c.String("broker")
	if c.String("twin") == "streams" {
		if !c.IsSet("broker") {
			brokerKind = "apache" // Kafka Streams' exactly-once wants a real broker
		}
		archive, err := streamsArchive(c, say)
		if err != nil {
			return err
		}
		defer os.RemoveAll(filepath.Dir(archive))
		cfg.TwinImageArchive = archive
		if ms := c.Int("commit-interval-ms"); ms > 0 {
			cfg.TwinArgs = []string{"-commit-interval-ms", strconv.Itoa(ms)}
		}
	} else {
		twin, err := besideExecutable(c, "twin", "twin")
		if err != nil {
			return err
		}
		cfg.TwinBinary = twin
	}
	kind, err := broker.ParseKind(brokerKind)
	if err != nil {
		return err
	}
	cfg.Lab.Broker = kind
	say("bringing up a lab: hosts cloud and fog, Kafka (%s), the twin on cloud, sensors at %.0f events/s ...", kind, c.Float64("rate"))
	s, err := scenario.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, to := range []string{"fog", "cloud"} {
		time.Sleep(c.Duration("dwell"))
		say("migrating the twin %s → %s ...", s.At(), to)
		if m := s.Migrate(ctx, to); m.Err != nil {
			say("  migration failed (rolled back): %v", m.Err)
		} else if !c.Bool("json") {
			_ = m.Report.WriteSummary(os.Stdout)
		}
	}
	time.Sleep(c.Duration("dwell"))
	say("stopping the sensors and verifying the twin's output (read_committed) ...")
	res, err := s.Finish(ctx)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printDemo(res)
	}
	if err := s.Close(); err != nil {
		return err
	}
	failed := res.Lost > 0 || res.Duplicated > 0 || res.Rebalances > 0 || res.EventsOut < res.EventsIn
	for _, m := range res.Migrations {
		failed = failed || m.Result != "committed"
	}
	if failed {
		return exitError{code: 3}
	}
	return nil
}

func printDemo(r scenario.Result) {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "MIGRATION\tRESULT\tDOWNTIME\tSTREAM GAP\tCRIU FROZEN\tSENT\tBOUNDARY CHECKED\t")
	for _, m := range r.Migrations {
		fmt.Fprintf(tw, "%s→%s\t%s\t%.0f ms\t%.0f ms\t%.0f ms\t%.1f MiB\t%s\t\n", m.From, m.To, m.Result, m.DowntimeMs, m.StreamGapMs,
			m.FrozenMs, float64(m.BytesSent)/(1<<20), map[bool]string{true: "yes", false: "NO"}[m.BoundaryChecked])
	}
	tw.Flush()
	fmt.Printf("\nevents in %d, out %d; lost %d, duplicated %d, out of order %d; group rebalances %d; normal output interval %.1f ms\n",
		r.EventsIn, r.EventsOut, r.Lost, r.Duplicated, r.OutOfOrder, r.Rebalances, r.IntervalMs)
}
