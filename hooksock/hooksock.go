// Package hooksock reaches an application's migration hook: a Unix socket inside a container,
// spoken to with one HTTP/1.1 request per connection (the protocol is kafkahooks/PROTOCOL.md;
// this package knows nothing of its calls).
//
// A host process reaches the socket through the container's root, /proc/PID/root, so no port is
// published. Each request gets a connection of its own, and the caller waits for the server to
// close it after the answer: when a call returns, no socket of the container is connected to
// the host, so a CRIU dump taken right after finds none to carry.
package hooksock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// MaxAnswer bounds the body of an answer read from a hook.
const MaxAnswer = 1 << 20

// maxUnixPath is the longest path a Unix socket address holds on Linux (sun_path less the NUL).
const maxUnixPath = 107

// closeWait bounds the wait for the server to close the connection after its answer, when the
// caller's context has no earlier deadline.
const closeWait = 5 * time.Second

// CheckSocket accepts socket, a path inside a container, only when it is absolute and clean:
// no "..", no ".", no doubled or trailing slash. Joined under /proc/PID/root such a path cannot
// climb out of the container's root by its own components.
func CheckSocket(socket string) error {
	switch {
	case socket == "":
		return errors.New("hook socket path is empty")
	case !strings.HasPrefix(socket, "/"):
		return fmt.Errorf("hook socket path %q: want an absolute path inside the container", socket)
	case path.Clean(socket) != socket || socket == "/":
		return fmt.Errorf("hook socket path %q: want a clean path (no \"..\", \".\" or doubled slashes), such as %q", socket, path.Clean(socket))
	}
	return nil
}

// Path returns where a host process reaches socket (a path inside the container) of the
// container whose init process is pid: /proc/PID/root/SOCKET.
func Path(pid uint32, socket string) (string, error) {
	if err := CheckSocket(socket); err != nil {
		return "", err
	}
	if pid == 0 {
		return "", errors.New("hook socket: the container has no init process")
	}
	return "/proc/" + strconv.FormatUint(uint64(pid), 10) + "/root" + socket, nil
}

// Serves reports whether a Unix socket exists at hostPath (as Path returns it).
func Serves(hostPath string) bool {
	fi, err := os.Stat(hostPath)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// Transport is an http.RoundTripper that sends each request over a connection of its own to
// the Unix socket at Path and, once the answer is read, waits for the server to close that
// connection. The answer's body is read whole (at most MaxAnswer bytes) before RoundTrip
// returns. The end of the request's context interrupts a blocked read or write.
type Transport struct {
	// Path is the socket as the host sees it (see Path).
	Path string
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if len(t.Path) > maxUnixPath {
		return nil, fmt.Errorf("hook socket path %q is longer than the %d bytes a Unix address holds", t.Path, maxUnixPath)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", t.Path)
	if err != nil {
		return nil, fmt.Errorf("dial hook socket %s: %w", t.Path, err)
	}
	defer conn.Close()
	// The end of ctx interrupts a blocked read or write (ctx.Err is set by then, so the error
	// says why).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("hook socket %s: %s: %w", t.Path, what, err)
	}

	out := req.Clone(ctx)
	out.Close = true
	if out.Host == "" {
		out.Host = "ftwin-hook"
	}
	if err := out.Write(conn); err != nil {
		return nil, fail("send the request", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		return nil, fail("read the answer", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	resp.Body.Close()
	if err != nil {
		return nil, fail("read the answer's body", err)
	}
	// Wait for the server's close: the server's end of the connection is then gone too.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > closeWait {
		_ = conn.SetReadDeadline(time.Now().Add(closeWait))
	}
	if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, io.EOF) {
		return nil, fail("wait for the server to close the connection", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}
