package kafkahooks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/hooksock"
)

// Client calls an application's hook. Over a hook socket (Dial) each call dials, sends one
// request, reads the answer and waits for the server to close, so that when a call returns no
// socket of the container is connected to the caller; NewClient sends the calls through any
// other transport, such as a migration agent's relay to a restored container's hook.
type Client struct {
	rt     http.RoundTripper
	where  string
	server atomic.Int32 // the server's version, once an answer said it
}

// Dial returns a Client for the hook socket at socketPath, a path on the host dialed as it is
// (for a socket inside a container, NewClient with hooksock.Socket's Transport). It does not
// connect until a call.
func Dial(socketPath string) *Client {
	return NewClient(&hooksock.Transport{Path: socketPath}, socketPath)
}

// NewClient returns a Client whose calls go through rt; where names it in errors.
func NewClient(rt http.RoundTripper, where string) *Client {
	return &Client{rt: rt, where: where}
}

// The calls of version 1 speak the newest version (3: the answers' version 3 fields, the strict
// resume of CapHold), said again in the server's version when an older server answers 400; the
// replay calls speak version 2, and a version 1 server answers them 400 (errors.Is(err,
// ErrNoReplay) holds for that answer as for a 501 from an application that cannot replay).

// Prepare asks the application to stop at a boundary and hold, and returns the boundary (with
// the state's digest when the application speaks version 2 and can replay).
func (c *Client) Prepare(ctx context.Context) (Boundary, error) {
	var b Boundary
	_, err := c.call(ctx, "prepare", http.MethodPost, "/v1/prepare", Version, nil, &b)
	if err == nil {
		err = spokenIn("prepare", b.Protocol)
	}
	return b, err
}

// spokenIn refuses an answer whose "protocol" field names a version this client does not
// speak (a server's answer says the version of the request it answers).
func spokenIn(op string, v int) error {
	if v < MinVersion || v > Version {
		return fmt.Errorf("kafkahooks: %s: the answer speaks protocol %d, this client %d to %d", op, v, MinVersion, Version)
	}
	return nil
}

// Resume tells the restored application (or a shadow: it takes over) to continue from its
// boundary and returns the offsets it resumed fetching from.
func (c *Client) Resume(ctx context.Context) (Offsets, error) {
	var r resumeResponse
	_, err := c.call(ctx, "resume", http.MethodPost, "/v1/resume", Version, nil, &r)
	if err == nil {
		err = spokenIn("resume", r.Protocol)
	}
	return r.Offsets, err
}

// Abort tells the application (the source, after a rollback) to carry on.
func (c *Client) Abort(ctx context.Context) error {
	_, err := c.call(ctx, "abort", http.MethodPost, "/v1/abort", Version, nil, nil)
	return err
}

// Status returns the application's state and committed offsets; Status.Protocol is the
// server's version.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	server, err := c.call(ctx, "status", http.MethodGet, "/v1/status", Version, nil, &s)
	if err == nil {
		err = spokenIn("status", s.Protocol)
	}
	if err == nil && server > 0 {
		s.Protocol = server
	}
	return s, err
}

// Release tells the source to carry on after a snapshot, with its clients as they are.
func (c *Client) Release(ctx context.Context) (Offsets, error) {
	var r resumeResponse
	_, err := c.call(ctx, "release", http.MethodPost, "/v2/release", 2, nil, &r)
	if err == nil && r.Protocol != 2 {
		err = fmt.Errorf("kafkahooks: release: the answer speaks protocol %d, want 2", r.Protocol)
	}
	return r.Offsets, err
}

// Shadow tells a restored copy that it is a shadow, and returns where its replay starts.
func (c *Client) Shadow(ctx context.Context) (Offsets, error) {
	var r resumeResponse
	_, err := c.call(ctx, "shadow", http.MethodPost, "/v2/shadow", 2, nil, &r)
	if err == nil && r.Protocol != 2 {
		err = fmt.Errorf("kafkahooks: shadow: the answer speaks protocol %d, want 2", r.Protocol)
	}
	return r.Offsets, err
}

// Advance has the shadow apply the records up to exactly to and returns its state's digest
// there.
func (c *Client) Advance(ctx context.Context, to Offsets) (Advanced, error) {
	var a Advanced
	body, err := json.Marshal(advanceRequest{Offsets: to})
	if err != nil {
		return a, fmt.Errorf("kafkahooks: advance: encode the offsets: %w", err)
	}
	_, err = c.call(ctx, "advance", http.MethodPost, "/v2/advance", 2, body, &a)
	if err == nil && a.Protocol != 2 {
		err = fmt.Errorf("kafkahooks: advance: the answer speaks protocol %d, want 2", a.Protocol)
	}
	return a, err
}

// call sends one request speaking version v (or the server's, if it said it speaks less) and
// returns the server's version from its answer header (0 if it sent none).
func (c *Client) call(ctx context.Context, op, method, path string, v int, in []byte, out any) (int, error) {
	var body io.Reader = http.NoBody
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ftwin-hook"+path, body)
	if err != nil {
		return 0, fmt.Errorf("kafkahooks: %s: build the request: %w", op, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if known := c.server.Load(); known > 0 && int(known) < v {
		v = int(known)
	}
	req.Header.Set(HeaderVersion, strconv.Itoa(v))
	if dl, ok := ctx.Deadline(); ok && v >= 3 {
		req.Header.Set(HeaderTimeout, strconv.FormatInt(max(0, time.Until(dl).Milliseconds()), 10))
	}
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return 0, fmt.Errorf("kafkahooks: %s via %s: %w", op, c.where, err)
	}
	server, _ := strconv.Atoi(resp.Header.Get(HeaderVersion))
	if server > 0 {
		c.server.Store(int32(server))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, hooksock.MaxAnswer))
	resp.Body.Close()
	if err != nil {
		return server, fmt.Errorf("kafkahooks: %s via %s: read the answer's body: %w", op, c.where, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = string(data)
		}
		if resp.StatusCode == http.StatusBadRequest && server > 0 && server < v && strings.HasPrefix(path, "/v1/") {
			// An older server: say the call again in its version (it is the same call).
			return c.call(ctx, op, method, path, server, in, out)
		}
		if server > 0 && server < 2 && strings.HasPrefix(path, "/v2/") {
			// A version 1 server knows no replay calls.
			return server, &Error{Op: op, StatusCode: http.StatusNotImplemented, Message: fmt.Sprintf("the application speaks hook protocol %d, which has no %s (%s)", server, path, e.Error)}
		}
		return server, &Error{Op: op, StatusCode: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return server, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return server, fmt.Errorf("kafkahooks: %s: decode the answer %q: %w", op, data, err)
	}
	return server, nil
}
