// Command twin is the digital twin workload: a Kafka consumer (static member, exactly-once by
// default) that keeps per-device state from sensor readings and produces one output record per
// reading (see package twin). It serves the kafkahooks protocol on -hook-socket so that
// ftwin-migrate can prepare, resume and abort it around a live migration, and prints a JSON
// status line per second: {"processed":N,"devices":D,"state_mib":M,"txn_commits":C,...}.
// SIGTERM and SIGINT commit the batch in hand and exit 0 without leaving the group. With
// -standby it keeps a replica of the state from the changelog and takes over on SIGUSR1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/twin/twin"
)

func main() {
	var cfg twin.Config
	brokers := flag.String("brokers", "127.0.0.1:9092", "seed brokers, comma-separated")
	flag.StringVar(&cfg.Group, "group", "ftwin-twin", "consumer group")
	flag.StringVar(&cfg.InstanceID, "instance-id", "twin-1", "static member id (group.instance.id); the transactional id is twin-<instance-id>")
	flag.StringVar(&cfg.In, "in", "sensors", "input topic")
	flag.StringVar(&cfg.Out, "out", "twin-state", "output topic")
	flag.StringVar(&cfg.Changelog, "changelog", "twin-changelog", "compacted changelog topic (with -rebuild-from-changelog)")
	flag.IntVar(&cfg.StateMiB, "state-mib", 16, "MiB of per-device history the twin holds (16 to 1024)")
	flag.IntVar(&cfg.Devices, "devices", 256, "devices of the fleet (d-0 ... d-N-1); each has an equal share of the state")
	flag.IntVar(&cfg.Window, "window", 60, "readings the rolling statistics cover")
	flag.BoolVar(&cfg.Transactional, "transactional", true, "exactly-once: one transaction per batch, read_committed")
	flag.BoolVar(&cfg.RebuildFromChangelog, "rebuild-from-changelog", false, "write every state change to the changelog topic and rebuild the state from there at start")
	flag.BoolVar(&cfg.Standby, "standby", false, "keep a standby replica from the changelog; take over as -instance-id on SIGUSR1")
	flag.BoolVar(&cfg.Digest, "digest", false, "compute the state digest after a rebuild or takeover and at exit (status line state_digest)")
	flag.BoolVar(&cfg.NoReplay, "no-replay", false, "do not offer migration by replay (hook capability replay): stop-and-copy only")
	flag.BoolVar(&cfg.Nondeterministic, "nondeterministic", false, "test knob: processes non-deterministically (the processing time goes into the state), so that a replayed copy's state differs: for testing replay migration's digest check")
	flag.DurationVar(&cfg.SessionTimeout, "session-timeout", 45*time.Second, "group session timeout (classic protocol; a KIP-848 group's is the broker's)")
	flag.StringVar(&cfg.GroupProtocol, "group-protocol", "classic", "consumer-group protocol: classic, or consumer (KIP-848, Kafka 4.0+: the broker assigns)")
	flag.DurationVar(&cfg.TransactionTimeout, "transaction-timeout", 40*time.Second, "producer transaction timeout (a move without hooks must finish within it)")
	hookSocket := flag.String("hook-socket", kafkahooks.SocketPath(), "kafkahooks socket (empty: no hooks)")
	kafkaLog := flag.String("kafka-log", "none", "log franz-go's client at this level to stderr: none, error, warn, info or debug")
	gogc := flag.Int("gogc", 25, "Go GC target percentage unless $GOGC is set: the state is one pointer-free arena, cheap to scan, and a low target keeps the heap (what CRIU dumps) near the state")
	flag.Parse()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gogc)
	}
	if flag.NArg() > 0 || cfg.StateMiB < 16 || cfg.StateMiB > 1024 {
		flag.Usage()
		os.Exit(2)
	}
	cfg.Brokers = strings.Split(*brokers, ",")
	level, ok := map[string]kgo.LogLevel{"none": kgo.LogLevelNone, "error": kgo.LogLevelError, "warn": kgo.LogLevelWarn,
		"info": kgo.LogLevelInfo, "debug": kgo.LogLevelDebug}[*kafkaLog]
	if !ok {
		fmt.Fprintf(os.Stderr, "twin: -kafka-log %q: want none, error, warn, info or debug\n", *kafkaLog)
		os.Exit(2)
	}
	if level != kgo.LogLevelNone {
		cfg.KgoOpts = append(cfg.KgoOpts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, level, func() string { return time.Now().Format("15:04:05.000000 kgo ") })))
	}
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	cfg.Logf = logger.Printf

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if cfg.Standby {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		takeover := make(chan struct{})
		go func() { <-usr1; close(takeover) }()
		cfg.Takeover = takeover
	}
	if err := run(ctx, cfg, *hookSocket, logger); err != nil {
		fmt.Fprintln(os.Stderr, "twin:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg twin.Config, hookSocket string, logger *log.Logger) error {
	t, err := twin.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	if hookSocket != "" {
		ln, err := kafkahooks.Listen(hookSocket)
		if err != nil {
			return err
		}
		logger.Printf("twin: kafkahooks protocol %d on %s", kafkahooks.Version, hookSocket)
		go func() {
			serveErr <- kafkahooks.Serve(ctx, t.Loop(), kafkahooks.WithListener(ln), kafkahooks.WithLogf(logger.Printf))
		}()
	}
	go status(ctx, t)
	runErr := make(chan error, 1)
	go func() { runErr <- t.Run(ctx) }()
	select {
	case err := <-runErr:
		cancel()
		printStatus(t)
		return err
	case err := <-serveErr:
		cancel()
		rerr := <-runErr
		printStatus(t)
		if err == nil {
			err = rerr
		}
		return err
	}
}

func status(ctx context.Context, t *twin.Twin) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			printStatus(t)
		}
	}
}

func printStatus(t *twin.Twin) {
	line, _ := json.Marshal(t.Stats())
	// One write per line keeps lines whole in pipes and log files.
	_, _ = os.Stdout.Write(append(line, '\n'))
}
