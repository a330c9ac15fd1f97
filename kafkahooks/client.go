package kafkahooks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/ftwin-migrate/ftwin-migrate/hooksock"
)

// Client calls an application's hook. Over a hook socket (Dial) each call dials, sends one
// request, reads the answer and waits for the server to close, so that when a call returns no
// socket of the container is connected to the caller; NewClient sends the calls through any
// other transport, such as a migration agent's relay to a restored container's hook.
type Client struct {
	rt    http.RoundTripper
	where string
}

// Dial returns a Client for the hook socket at socketPath, a path on the host dialed as it is
// (for a socket inside a container, NewClient with hooksock.Socket's Transport). It does not
// connect until a call.
func Dial(socketPath string) *Client {
	return &Client{rt: &hooksock.Transport{Path: socketPath}, where: socketPath}
}

// NewClient returns a Client whose calls go through rt; where names it in errors.
func NewClient(rt http.RoundTripper, where string) *Client { return &Client{rt: rt, where: where} }

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
	req, err := http.NewRequestWithContext(ctx, method, "http://ftwin-hook"+path, http.NoBody)
	if err != nil {
		return fmt.Errorf("kafkahooks: %s: build the request: %w", op, err)
	}
	req.Header.Set(HeaderVersion, strconv.Itoa(Version))
	resp, err := c.rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("kafkahooks: %s via %s: %w", op, c.where, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, hooksock.MaxAnswer))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("kafkahooks: %s via %s: read the answer's body: %w", op, c.where, err)
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
