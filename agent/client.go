package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Client talks to an agent.
type Client struct {
	base string
	hc   *http.Client
	host string // the agent's host name, once known
}

// ClientOpt configures a Client.
type ClientOpt func(*Client)

// WithTransport replaces the HTTP transport (tests wrap it to cut or corrupt traffic).
func WithTransport(wrap func(http.RoundTripper) http.RoundTripper) ClientOpt {
	return func(c *Client) { c.hc.Transport = wrap(c.hc.Transport) }
}

// WithDialer dials the agent's TCP connections with dial (the lab dials from a host's
// network namespace).
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) ClientOpt {
	return func(c *Client) {
		if tr, ok := c.hc.Transport.(*http.Transport); ok {
			tr.DialContext = dial
		}
	}
}

// NewClient returns a client for the agent at addr (host:port) over mutual TLS.
func NewClient(addr string, tlsConfig *tls.Config, opts ...ClientOpt) *Client {
	tr := &http.Transport{TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
	c := &Client{base: "https://" + addr, hc: &http.Client{Transport: tr}, host: addr}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Host is the agent's host name (its address until Hello succeeded).
func (c *Client) Host() string { return c.host }

// Hello checks that the agent is reachable, authenticated and speaks this protocol version.
func (c *Client) Hello(ctx context.Context) (Hello, error) {
	var h Hello
	if err := c.do(ctx, http.MethodGet, "/v1/hello", nil, &h); err != nil {
		return h, err
	}
	if h.Protocol != ProtocolVersion {
		return h, fmt.Errorf("agent %s speaks protocol %d, this migrator %d: run the same ftwin-migrate version on both hosts", h.Host, h.Protocol, ProtocolVersion)
	}
	c.host = h.Host
	return h, nil
}

// CheckCPU asks the agent whether its CPU can run a CRIU image dumped on a CPU described by
// cpuinfo (the cpuinfo.img of `criu cpuinfo dump`).
func (c *Client) CheckCPU(ctx context.Context, cpuinfo []byte) error {
	return c.do(ctx, http.MethodPost, "/v1/cpuinfo/check", bytes.NewReader(cpuinfo), nil)
}

// Open opens a migration session.
func (c *Client) Open(ctx context.Context, req SessionRequest) (*SessionClient, error) {
	body, _ := json.Marshal(req)
	var s Session
	if err := c.do(ctx, http.MethodPost, "/v1/sessions", bytes.NewReader(body), &s); err != nil {
		return nil, err
	}
	return &SessionClient{c: c, ID: s.ID, Timeout: s.Timeout}, nil
}

// SessionClient drives one migration session. It implements transfer.Remote.
type SessionClient struct {
	c       *Client
	ID      string
	Timeout time.Duration
}

func (s *SessionClient) path(p string) string { return "/v1/sessions/" + s.ID + p }

// Missing implements transfer.Remote.
func (s *SessionClient) Missing(ctx context.Context, blobs []ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	body, _ := json.Marshal(blobs)
	var out []ocispec.Descriptor
	err := s.c.do(ctx, http.MethodPost, s.path("/missing"), bytes.NewReader(body), &out)
	return out, err
}

// Put implements transfer.Remote.
func (s *SessionClient) Put(ctx context.Context, d ocispec.Descriptor, r io.Reader) (int64, error) {
	q := url.Values{"digest": {d.Digest.String()}, "size": {strconv.FormatInt(d.Size, 10)}, "mediatype": {d.MediaType}}
	cr := &countReader{r: r}
	err := s.c.do(ctx, http.MethodPut, s.path("/blobs?"+q.Encode()), cr, nil)
	return cr.n, err
}

// PutDir implements transfer.DirRemote: it sends the CRIU image directory's stream.
func (s *SessionClient) PutDir(ctx context.Context, r io.Reader) (int64, string, error) {
	cr := &countReader{r: r}
	var got ImageReceived
	err := s.c.do(ctx, http.MethodPut, s.path("/criu-image"), cr, &got)
	return cr.n, got.Digest, err
}

// Restore asks the agent to restore the container from the checkpoint index, and from the CRIU
// image directory with digest imageDigest if that is set.
func (s *SessionClient) Restore(ctx context.Context, index ocispec.Descriptor, imageDigest string) (RestoreResult, error) {
	body, _ := json.Marshal(RestoreRequest{Index: index, ImageDigest: imageDigest})
	var res RestoreResult
	err := s.c.do(ctx, http.MethodPost, s.path("/restore"), bytes.NewReader(body), &res)
	return res, err
}

// Verify asks the agent whether the restored container runs (and passes its probe).
func (s *SessionClient) Verify(ctx context.Context) (VerifyResult, error) {
	var res VerifyResult
	err := s.c.do(ctx, http.MethodPost, s.path("/verify"), nil, &res)
	return res, err
}

// HookTransport returns an http.RoundTripper whose requests reach the restored container's
// application hook through the agent's relay: METHOD /PATH goes to the hook as it is, and the
// hook's answer comes back as it is. An error of the relay itself (no such session, nothing
// restored, hook unreachable) is returned as a *RemoteError.
func (s *SessionClient) HookTransport() http.RoundTripper { return relayTransport{s} }

type relayTransport struct{ s *SessionClient }

func (t relayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out, err := http.NewRequestWithContext(req.Context(), req.Method, t.s.c.base+t.s.path("/hook"+req.URL.Path), req.Body)
	if err != nil {
		return nil, err
	}
	for k, v := range req.Header {
		if strings.HasPrefix(k, HookHeaderPrefix) {
			out.Header[k] = v
		}
	}
	out.Header.Set(ProtocolHeader, strconv.Itoa(ProtocolVersion))
	resp, err := t.s.c.hc.Do(out)
	if err != nil {
		return nil, fmt.Errorf("agent %s unreachable or refused the connection: %w", t.s.c.host, err)
	}
	if resp.Header.Get(RelayHeader) == "" {
		defer resp.Body.Close()
		return nil, t.s.c.remoteError(resp)
	}
	return resp, nil
}

// Commit tells the agent the migration is final.
func (s *SessionClient) Commit(ctx context.Context) error {
	return s.c.do(ctx, http.MethodPost, s.path("/commit"), nil, nil)
}

// Abort tells the agent to remove everything of the session.
func (s *SessionClient) Abort(ctx context.Context) error {
	return s.c.do(ctx, http.MethodPost, s.path("/abort"), nil, nil)
}

// ContainerState asks the agent what it knows of container id in namespace ns.
func (c *Client) ContainerState(ctx context.Context, ns, id string) (ContainerState, error) {
	var st ContainerState
	err := c.do(ctx, http.MethodGet, "/v1/containers/"+url.PathEscape(ns)+"/"+url.PathEscape(id), nil, &st)
	return st, err
}

// AbortContainer asks the agent to undo an uncommitted migration of container id.
func (c *Client) AbortContainer(ctx context.Context, ns, id string) error {
	return c.do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(ns)+"/"+url.PathEscape(id)+"/abort", nil, nil)
}

// RemoteError is an error the agent answered with.
type RemoteError struct {
	Host    string
	Status  int
	Message string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("agent %s: %s", e.Host, e.Message) }

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set(ProtocolHeader, strconv.Itoa(ProtocolVersion))
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent %s unreachable or refused the connection: %w", c.host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return c.remoteError(resp)
	}
	if v := resp.Header.Get(ProtocolHeader); v != "" && v != strconv.Itoa(ProtocolVersion) {
		return fmt.Errorf("agent %s answered with protocol %s, this migrator speaks %d", c.host, v, ProtocolVersion)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("agent %s: bad answer to %s %s: %w", c.host, method, path, err)
	}
	return nil
}

// remoteError reads the agent's error answer.
func (c *Client) remoteError(resp *http.Response) error {
	var eb errorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		eb.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return &RemoteError{Host: c.host, Status: resp.StatusCode, Message: eb.Error}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
