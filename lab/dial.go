package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// DialContext dials from inside the host's network namespace, as a process on that host
// would: the socket is created there, and so is its traffic. Its signature fits
// kgo.Dialer and net/http's Transport.DialContext.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	// A thread that enters another namespace must not run other goroutines until it is back;
	// a fresh locked goroutine keeps the switch to itself.
	go func() {
		runtime.LockOSThread()
		back, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer back.Close()
		target, err := os.Open(h.NetNSPath())
		if err != nil {
			ch <- result{nil, fmt.Errorf("lab: host %s network namespace: %w", h.Name, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("lab: enter host %s network namespace: %w", h.Name, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err := unix.Setns(int(back.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread is stuck in the host's namespace: leave it locked so it ends with the goroutine.
			if c != nil {
				c.Close()
			}
			ch <- result{nil, fmt.Errorf("lab: leave host %s network namespace: %w", h.Name, err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
