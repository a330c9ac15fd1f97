package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/bench"
	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/scenario"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "move the twin with every method side by side (ftwin-migrate stop-and-copy and replay, containerd, Kafka restart, warm standby, CRIU floor), repeated, and write the table and plot",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "short", Usage: "the CI version: 16 MiB, unthrottled and 100 Mbit/s, every method once"},
			&cli.BoolFlag{Name: "streams", Usage: "move the Kafka Streams twin (twins/streams, built by `make java`) instead of the Go twin, with " + fmt.Sprint(bench.StreamsMethods) + ", at every --link-mbit; its state is its store for --devices devices; Apache Kafka"},
			&cli.StringFlag{Name: "streams-app", Usage: "with --streams: the Streams twin's application directory (default: " + scenario.StreamsAppDir + " here or beside bin/)"},
			&cli.IntSliceFlag{Name: "state-mib", Value: cli.NewIntSlice(16, 128, 512), Usage: "twin state sizes"},
			&cli.BoolFlag{Name: "with-1gib", Usage: "add a 1024 MiB state"},
			&cli.IntSliceFlag{Name: "link-mbit", Value: cli.NewIntSlice(0, 100), Usage: "host link rates (0: unthrottled), for every state size"},
			&cli.IntFlag{Name: "thin-mbit", Value: 20, Usage: "a thin fog uplink, at --extra-state-mib only (0: none)"},
			&cli.BoolFlag{Name: "high-rate", Value: true, Usage: "add a cell at 80% of the twin's measured capacity, unthrottled, at --extra-state-mib"},
			&cli.IntFlag{Name: "extra-state-mib", Value: 128, Usage: "state size of the thin-link and high-rate cells"},
			&cli.StringSliceFlag{Name: "method", Usage: "methods to run (default: " + fmt.Sprint(bench.Methods) + "; also " + bench.AllMethods[len(bench.AllMethods)-1] + ")"},
			&cli.StringSliceFlag{Name: "skip", Usage: "leave a method out at a state size, as METHOD:STATE_MIB (e.g. kafka-restart:16), to fit a budget; the report says so"},
			&cli.Float64Flag{Name: "rate", Value: 200, Usage: "sensor events per second (the base rate)"},
			&cli.IntFlag{Name: "repeats", Value: 5, Usage: "runs of every method per cell"},
			&cli.IntFlag{Name: "repeats-heavy", Value: 3, Usage: "runs per cell for the long cells: states above --extra-state-mib, the thin link, the high rate"},
			&cli.IntFlag{Name: "devices", Value: 256, Usage: "devices of the fleet"},
			&cli.DurationFlag{Name: "dwell", Value: 0, Usage: "time before and after each move (default 2s)"},
			&cli.StringFlag{Name: "name", Value: "bench", Usage: "lab name (1-8 of [a-z0-9]); two benchmarks side by side need different ones"},
			&cli.StringFlag{Name: "subnet", Value: "10.231.100.0/24", Usage: "the labs' IPv4 /24; two benchmarks side by side need different ones"},
			&cli.StringFlag{Name: "broker", Value: "kfake", Usage: "the labs' Kafka: kfake or apache (the only one with --streams)"},
			&cli.StringFlag{Name: "twin", Usage: "static twin binary (default: twin beside this executable)"},
			&cli.StringFlag{Name: "out", Value: "results", Usage: "directory for bench.json, bench.md and bench.svg"},
			&cli.StringFlag{Name: "render", Usage: "render bench.md and bench.svg again from this bench.json (no runs)"},
			&cli.StringFlag{Name: "retry-failed", Usage: "measure again the failed runs of this bench.json (same cells, methods, repeats) and write the merged results to --out"},
		},
		Action: func(c *cli.Context) error {
			if p := c.String("render"); p != "" {
				res, err := bench.Load(p)
				if err != nil {
					return err
				}
				return res.Write(c.String("out"))
			}
			brokerName := c.String("broker")
			if c.Bool("streams") && !c.IsSet("broker") {
				brokerName = string(broker.Apache)
			}
			kind, err := broker.ParseKind(brokerName)
			if err != nil {
				return err
			}
			cfg := bench.Config{Methods: c.StringSlice("method"), Repeats: c.Int("repeats"), Devices: c.Int("devices"),
				Dwell: c.Duration("dwell"), Name: c.String("name"), Subnet: c.String("subnet"),
				Broker: kind, Log: os.Stderr}
			if c.Bool("streams") {
				say := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...) }
				if cfg.StreamsArchive, err = streamsArchive(c, say); err != nil {
					return err
				}
				defer os.RemoveAll(filepath.Dir(cfg.StreamsArchive))
			} else if cfg.TwinBinary, err = besideExecutable(c, "twin", "twin"); err != nil {
				return err
			}
			states, links, rate := c.IntSlice("state-mib"), c.IntSlice("link-mbit"), c.Float64("rate")
			thin, high, extra := c.Int("thin-mbit"), c.Bool("high-rate"), c.Int("extra-state-mib")
			if c.Bool("with-1gib") {
				states = append(states, 1024)
			}
			if c.Bool("short") {
				states, links, thin, high, cfg.Repeats = []int{16}, []int{0, 100}, 0, false, 1
			}
			heavy := c.Int("repeats-heavy")
			if c.Bool("short") {
				heavy = 1
			}
			if c.Bool("streams") {
				states, thin, high = []int{0}, 0, false
			}
			for _, link := range links {
				for _, s := range states {
					cell := bench.Cell{StateMiB: s, LinkMbit: link, Rate: rate}
					if s > extra {
						cell.Repeats = heavy
					}
					cfg.Cells = append(cfg.Cells, cell)
				}
			}
			if thin > 0 {
				cfg.Cells = append(cfg.Cells, bench.Cell{StateMiB: extra, LinkMbit: thin, Rate: rate, Repeats: heavy})
			}
			if high {
				cfg.Cells = append(cfg.Cells, bench.Cell{StateMiB: extra, HighRate: true, Repeats: heavy})
			}
			out := c.String("out")
			cfg.OnRun = func(r *bench.Results) {
				if err := r.Write(out); err != nil {
					fmt.Fprintf(os.Stderr, "bench: write %s: %v\n", out, err)
				}
			}
			for _, m := range cfg.Methods {
				if c.Bool("streams") && !slices.Contains(bench.StreamsMethods, m) {
					return fmt.Errorf("--method %q: with --streams, want one of %v", m, bench.StreamsMethods)
				}
				if !slices.Contains(bench.AllMethods, m) {
					return fmt.Errorf("--method %q: want one of %v", m, bench.AllMethods)
				}
			}
			for _, x := range c.StringSlice("skip") {
				sk, err := parseSkip(x)
				if err != nil {
					return err
				}
				cfg.Skip = append(cfg.Skip, sk)
			}
			var res *bench.Results
			if p := c.String("retry-failed"); p != "" {
				if res, err = bench.Load(p); err == nil {
					err = bench.Retry(c.Context, cfg, res)
				}
			} else {
				res, err = bench.Measure(c.Context, cfg)
			}
			if res != nil {
				if werr := res.Write(c.String("out")); werr != nil {
					return werr
				}
				_ = res.WriteMarkdown(os.Stdout)
				fmt.Printf("\nwritten to %s (bench.json, bench.md, bench.svg)\n", filepath.Clean(c.String("out")))
			}
			if err != nil {
				return err
			}
			if !res.OK() {
				return fmt.Errorf("a run failed, lost or duplicated events, or rebuilt a different state (see the table and %s/bench.json)", c.String("out"))
			}
			return nil
		},
	}
}

// streamsArchive builds the Kafka Streams twin's image archive (from --streams-app, or where
// scenario.FindStreamsApp looks) in a new temporary directory, the caller's to remove, and says
// so through say.
func streamsArchive(c *cli.Context, say func(format string, a ...any)) (string, error) {
	app, err := scenario.FindStreamsApp(c.String("streams-app"))
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "ftwin-streams-image-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "streams-twin.tar")
	say("building the Kafka Streams twin's image (a jlink'd JRE and %s) ...", app)
	if err := scenario.BuildStreamsTwin(c.Context, app, out); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return out, nil
}

// parseSkip reads --skip METHOD:STATE_MIB.
func parseSkip(s string) (bench.Skip, error) {
	method, state, ok := strings.Cut(s, ":")
	n, err := strconv.Atoi(state)
	if !ok || err != nil || n <= 0 {
		return bench.Skip{}, fmt.Errorf("--skip %q: want METHOD:STATE_MIB, e.g. kafka-restart:16", s)
	}
	if !slices.Contains(bench.AllMethods, method) {
		return bench.Skip{}, fmt.Errorf("--skip %q: method %q: want one of %v", s, method, bench.AllMethods)
	}
	return bench.Skip{Method: method, StateMiB: n}, nil
}
