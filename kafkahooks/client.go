package kafkahooks

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// maxUnixPath is the longest path a Unix socket address holds on Linux (sun_path less the NUL).
const maxUnixPath = 107

// closeWait bounds how long the Client waits for the server to close the connection after the
// answer, when the caller's context has no earlier deadline.
const closeWait = 5 * time.Second

// Client calls an application's hook socket. It holds no connection between calls: each call
// dials, sends one request, reads the answer and then waits for the server to close, so that
// when a call returns no socket of the container is connected to the caller.
type Client struct {
	path string
}

// Dial returns a Client for the hook socket at socketPath (for a container seen from the host:
// ContainerSocketPath(pid)). It does not connect until a call.
func Dial(socketPath string) *Client { return &Client{path: socketPath} }

// Path is the socket the Client calls.
func (c *Client) Path() string { return c.path }

// Prepare asks the application to stop at a boundary and hold, and returns the boundary.
func (c *Client) Prepare(ctx context.Context) (Boundary, error) {
	var b Boundary
	err := c.call(ctx, "prepare", http.MethodPost, "/v1/prepare", &b)
	if err == nil && b.Protocol != Version {
		err = fmt.Errorf("kafkahooks: prepare: the answer speaks protocol %d, this client %d", b.Protocol, Version)
	}
	return b, err
}

// Resume tells the restored application to continue from its boundary and returns the offsets
// it resumed fetching from.
func (c *Client) Resume(ctx context.Context) (Offsets, error) {
	var r resumeResponse
	err := c.call(ctx, "resume", http.MethodPost, "/v1/resume", &r)
	if err == nil && r.Protocol != Version {
		err = fmt.Errorf("kafkahooks: resume: the answer speaks protocol %d, this client %d", r.Protocol, Version)
	}
	return r.Offsets, err
}

// Abort tells the application (the source, after a rollback) to carry on.
func (c *Client) Abort(ctx context.Context) error {
	return c.call(ctx, "abort", http.MethodPost, "/v1/abort", nil)
}

// Status returns the application's state and committed offsets.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.call(ctx, "status", http.MethodGet, "/v1/status", &s)
	if err == nil && s.Protocol != Version {
		err = fmt.Errorf("kafkahooks: status: the answer speaks protocol %d, this client %d", s.Protocol, Version)
	}
	return s, err
}

func (c *Client) call(ctx context.Context, op, method, path string, out any) error {
	if len(c.path) > maxUnixPath {
		return fmt.Errorf("kafkahooks: %s: socket path %q is longer than the %d bytes a Unix address holds", op, c.path, maxUnixPath)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return fmt.Errorf("kafkahooks: %s: dial %s: %w", op, c.path, err)
	}
	defer conn.Close()
	// The end of ctx interrupts a blocked read or write (ctx.Err is set by then, so the
	// error says why).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("kafkahooks: %s via %s: %s: %w", op, c.path, what, err)
	}

	req, err := http.NewRequestWithContext(ctx, method, "http://ftwin-hook"+path, http.NoBody)
	if err != nil {
		return fmt.Errorf("kafkahooks: %s: build the request: %w", op, err)
	}
	req.Header.Set(HeaderVersion, strconv.Itoa(Version))
	req.Close = true
	if err := req.Write(conn); err != nil {
		return fail("send the request", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail("read the answer", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return fail("read the answer's body", err)
	}
	// Wait for the server's close: the server's end of the connection is then gone too.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > closeWait {
		_ = conn.SetReadDeadline(time.Now().Add(closeWait))
	}
	if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, io.EOF) {
		return fail("wait for the server to close the connection", err)
	}

	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = string(body)
		}
		return &Error{Op: op, StatusCode: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("kafkahooks: %s: decode the answer %q: %w", op, body, err)
	}
	return nil
}
