package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Listen opens a listener in the host's network namespace (for an agent served in process).
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.inNetNS(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext dials from inside the host's network namespace, as a process on that host
// would: the socket is created there, and so is its traffic. Its signature fits
// kgo.Dialer and net/http's Transport.DialContext.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNetNS(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// inNetNS runs fn on an OS thread switched into the host's network namespace. Sockets fn
// creates belong to that namespace for their whole life.
func (h *Host) inNetNS(fn func() error) error {
	errc := make(chan error, 1)
	// A thread that enters another namespace must not run other goroutines until it is back;
	// a fresh locked goroutine keeps the switch to itself.
	go func() {
		runtime.LockOSThread()
		back, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer back.Close()
		target, err := os.Open(h.NetNSPath())
		if err != nil {
			errc <- fmt.Errorf("lab: host %s network namespace: %w", h.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("lab: enter host %s network namespace: %w", h.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(back.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays in the host's namespace: it stays locked and ends with the goroutine.
			errc <- fmt.Errorf("lab: leave host %s network namespace: %w", h.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
