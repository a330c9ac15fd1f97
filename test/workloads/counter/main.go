// Command counter is a small stateful workload that proves checkpoint/restore
// continuity. It fills a buffer with deterministic pseudo-random content,
// mutates a few words of it on every tick while tracking a checksum, verifies
// the whole buffer against that checksum periodically, and prints one JSON
// line per tick (see package state for the format).
//
// After a CRIU checkpoint and restore the process carries on: tick keeps
// increasing, start_ns and the checksum lineage are unchanged and mem_ok stays
// true. A restarted process starts again at tick 1 with a new start_ns.
//
// With -listen it also serves GET /state (the latest line) and GET /healthz
// (200 while the memory check passes, 500 otherwise). SIGTERM and SIGINT make
// it exit 0.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/counter/memstate"
)

// Full verification runs at most once per minVerifyGap, and never more often
// than verifyCostFactor times its own duration, which keeps it under about
// 1/verifyCostFactor of one CPU for large buffers.
const (
	minVerifyGap     = time.Second
	verifyCostFactor = 10
)

func main() {
	memMiB := flag.Int("mem-mib", 16, "size of the checked memory buffer in MiB (at least 1)")
	interval := flag.Duration("interval", 200*time.Millisecond, "time between ticks")
	listen := flag.String("listen", "", "serve GET /state and GET /healthz on this address (e.g. :8080)")
	seed := flag.Uint64("seed", 1, "seed of the buffer content and of the mutations")
	connect := flag.String("connect", "", "also send each state line over a TCP connection to this address, reconnecting when it breaks")
	printClock := flag.Bool("print-clock", false, "print one line {\"mono_ns\":…,\"now_ns\":…} (CLOCK_MONOTONIC and the Unix time, as this process sees them) and exit")
	flag.Parse()
	if *printClock {
		line, _ := json.Marshal(state.State{MonoNS: monotonicNS(), NowNS: time.Now().UnixNano()})
		fmt.Println(string(line))
		return
	}
	if *memMiB < 1 || *interval <= 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *memMiB, *seed, *interval, *listen, &peer{addr: *connect}); err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		os.Exit(1)
	}
}

// monotonicNS reads CLOCK_MONOTONIC: in a time namespace, the namespace's clock.
func monotonicNS() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// latest is the most recent state, shared with the HTTP handlers.
type latest struct {
	mu sync.Mutex
	s  state.State
}

func (l *latest) set(s state.State) {
	l.mu.Lock()
	l.s = s
	l.mu.Unlock()
}

func (l *latest) get() state.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s
}

// run ticks until ctx is done, which is a clean exit.
func run(ctx context.Context, memMiB int, seed uint64, interval time.Duration, listen string, out *peer) error {
	start := time.Now()
	buf := memstate.New(memMiB, seed)
	cur := &latest{}

	var (
		tick       uint64
		memOK      bool
		nextVerify time.Time
	)
	step := func() error {
		tick++
		buf.Step(tick)
		if now := time.Now(); !now.Before(nextVerify) {
			memOK = buf.Verify()
			nextVerify = now.Add(max(minVerifyGap, verifyCostFactor*time.Since(now)))
		}
		s := state.State{
			Tick:     tick,
			MemMiB:   memMiB,
			Checksum: buf.Checksum(),
			MemOK:    memOK,
			PID:      os.Getpid(),
			StartNS:  start.UnixNano(),
			NowNS:    time.Now().UnixNano(),
			MonoNS:   monotonicNS(),
		}
		s.Reconnects, s.PeerLocal = out.reconnects, out.local
		cur.set(s)
		line, err := json.Marshal(s)
		if err != nil {
			return err
		}
		// One write per line keeps lines whole in pipes and log files.
		if _, err := os.Stdout.Write(append(line, '\n')); err != nil {
			return fmt.Errorf("write state: %w", err)
		}
		out.send(append(line, '\n'))
		return nil
	}

	// The first tick runs before the server starts, so /state is never empty.
	if err := step(); err != nil {
		return err
	}
	if listen != "" {
		if err := serve(ctx, listen, cur); err != nil {
			return err
		}
	}

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := step(); err != nil {
				return err
			}
		}
	}
}

// serve starts the HTTP server in the background; it stops when ctx is done.
func serve(ctx context.Context, addr string, cur *latest) error {
	// Go listeners use MPTCP by default (since Go 1.24) where the kernel has
	// it, and CRIU cannot dump MPTCP sockets ("Unsupported proto 262").
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "counter: listening on", ln.Addr())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(cur.get())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !cur.get().MemOK {
			http.Error(w, "memory check failed", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "counter: http:", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return nil
}

// peer is an optional TCP connection the state lines also go to. A write that fails (as after
// a restore with CRIU's tcp-close on another host) closes it; the next line redials.
type peer struct {
	addr       string
	conn       net.Conn
	reconnects uint64 // dials after the first
	dials      uint64
	local      string // local address of the current connection
}

func (p *peer) send(line []byte) {
	if p.addr == "" {
		return
	}
	if p.conn == nil {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return
		}
		if p.dials > 0 {
			p.reconnects++
		}
		p.dials++
		p.conn, p.local = c, c.LocalAddr().String()
	}
	_ = p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := p.conn.Write(line); err != nil {
		p.conn.Close()
		p.conn, p.local = nil, ""
	}
}
