package kafkahooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxRequest bounds a request's body (an advance names offsets of a few partitions).
const maxRequest = 1 << 20

// ServeOpt configures Serve.
type ServeOpt func(*serveConfig)

type serveConfig struct {
	path string
	ln   net.Listener
	logf func(format string, args ...any)
}

// WithSocket serves on path instead of SocketPath().
func WithSocket(path string) ServeOpt { return func(c *serveConfig) { c.path = path } }

// WithListener serves on ln (from Listen), which Serve closes when it returns.
func WithListener(ln net.Listener) ServeOpt { return func(c *serveConfig) { c.ln = ln } }

// WithLogf logs each call and its outcome through logf.
func WithLogf(logf func(format string, args ...any)) ServeOpt {
	return func(c *serveConfig) { c.logf = logf }
}

// Listen creates the socket's directory, removes a stale socket file and listens on path.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("kafkahooks: create the socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("kafkahooks: remove the stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("kafkahooks: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("kafkahooks: restrict %s to its owner: %w", path, err)
	}
	return ln, nil
}

// Serve answers the protocol for p until ctx is done, then removes the socket and returns nil.
// It listens on SocketPath() unless told otherwise (WithSocket, WithListener).
func Serve(ctx context.Context, p Participant, opts ...ServeOpt) error {
	c := serveConfig{path: SocketPath()}
	for _, o := range opts {
		o(&c)
	}
	ln := c.ln
	if ln == nil {
		var err error
		if ln, err = Listen(c.path); err != nil {
			return err
		}
	}
	srv := &http.Server{Handler: newHandler(p, c.logf), ReadHeaderTimeout: 10 * time.Second}
	// One request per connection: a kept-alive connection from the migrator would be a
	// socket connected outside the container when CRIU dumps it.
	srv.SetKeepAlivesEnabled(false)
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	if ua, ok := ln.Addr().(*net.UnixAddr); ok && ctx.Err() != nil {
		_ = os.Remove(ua.Name)
	}
	if errors.Is(err, http.ErrServerClosed) && ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("kafkahooks: serve: %w", err)
}

// NewHandler is the protocol as an http.Handler, for applications that serve it themselves.
// It must be served without keep-alives (http.Server.SetKeepAlivesEnabled(false)).
func NewHandler(p Participant) http.Handler { return newHandler(p, nil) }

// calls are the protocol's calls: path, method and the version that introduced them.
var calls = []struct {
	method, path string
	since        int
}{
	{http.MethodPost, "/v1/prepare", 1},
	{http.MethodPost, "/v1/resume", 1},
	{http.MethodPost, "/v1/abort", 1},
	{http.MethodGet, "/v1/status", 1},
	{http.MethodPost, "/v2/release", 2},
	{http.MethodPost, "/v2/shadow", 2},
	{http.MethodPost, "/v2/advance", 2},
}

// callList names the calls, for the answer to an unknown path.
func callList() string {
	var s []string
	for _, c := range calls {
		s = append(s, c.path)
	}
	return strings.Join(s, ", ")
}

type handler struct {
	p    Participant
	logf func(format string, args ...any)
	mu   sync.Mutex // serialises prepare, resume, abort, release, shadow and advance
}

// spokenKey carries the version a request speaks in its context.
type spokenKey struct{}

func spoken(ctx context.Context) int {
	v, _ := ctx.Value(spokenKey{}).(int)
	return v
}

func newHandler(p Participant, logf func(string, ...any)) http.Handler {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	h := &handler{p: p, logf: logf}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/prepare", h.serialised("prepare", func(ctx context.Context, _ []byte) (any, error) {
		b, err := h.p.Prepare(ctx)
		b.Protocol = spoken(ctx)
		if b.Protocol < 2 {
			b.Digest = ""
		}
		if b.Protocol < 3 {
			b.Capabilities = nil
		}
		return b, err
	}))
	mux.HandleFunc("POST /v1/resume", h.serialised("resume", func(ctx context.Context, _ []byte) (any, error) {
		offs, err := h.p.Resume(ctx)
		return resumeResponse{Protocol: spoken(ctx), Offsets: offs}, err
	}))
	mux.HandleFunc("POST /v1/abort", h.serialised("abort", func(ctx context.Context, _ []byte) (any, error) {
		return struct{}{}, h.p.Abort(ctx)
	}))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		s := h.p.Status()
		s.Protocol = spoken(r.Context())
		if s.Protocol < 3 {
			s.OffsetsSource, s.CommitInterval = "", 0
		}
		if s.Protocol < 2 {
			s = Status{Protocol: s.Protocol, State: s.State, Offsets: s.Offsets}
			if s.State == StateShadow {
				s.State = StatePrepared // a version 1 client knows no shadows; it holds
			}
		}
		writeJSON(w, http.StatusOK, s)
	})
	replay := func(op string, call func(ctx context.Context, r Replayer, body []byte) (any, error)) http.HandlerFunc {
		return h.serialised(op, func(ctx context.Context, body []byte) (any, error) {
			r, ok := h.p.(Replayer)
			if !ok {
				return nil, ErrNoReplay
			}
			return call(ctx, r, body)
		})
	}
	mux.HandleFunc("POST /v2/release", replay("release", func(ctx context.Context, r Replayer, _ []byte) (any, error) {
		offs, err := r.Release(ctx)
		return resumeResponse{Protocol: spoken(ctx), Offsets: offs}, err
	}))
	mux.HandleFunc("POST /v2/shadow", replay("shadow", func(ctx context.Context, r Replayer, _ []byte) (any, error) {
		offs, err := r.Shadow(ctx)
		return resumeResponse{Protocol: spoken(ctx), Offsets: offs}, err
	}))
	mux.HandleFunc("POST /v2/advance", replay("advance", func(ctx context.Context, r Replayer, body []byte) (any, error) {
		var req advanceRequest
		if err := json.Unmarshal(body, &req); err != nil || req.Offsets.Len() == 0 {
			return nil, badRequest{fmt.Errorf("advance: want a body {\"offsets\":{TOPIC:{PARTITION:OFFSET}}} naming at least one partition (%v)", err)}
		}
		a, err := r.Advance(ctx, req.Offsets)
		a.Protocol = spoken(ctx)
		return a, err
	}))
	// The patterns above win over these for their method: what is left is a wrong method
	// (405) or an unknown path (404), answered in JSON as every other error.
	for _, c := range calls {
		mux.HandleFunc(c.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", c.method)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", c.path, c.method, r.Method))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such call %s (protocol %d has %s)", r.URL.Path, Version, callList()))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderVersion, strconv.Itoa(Version))
		w.Header().Set("Connection", "close")
		hv := r.Header.Get(HeaderVersion)
		v, err := strconv.Atoi(hv)
		switch {
		case hv == "":
			writeError(w, http.StatusBadRequest, fmt.Sprintf("missing header %s (this server speaks protocol %d to %d)", HeaderVersion, MinVersion, Version))
			return
		case err != nil || v < MinVersion || v > Version:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("protocol mismatch: the client speaks %s %q, this server speaks %d to %d", HeaderVersion, hv, MinVersion, Version))
			return
		case path.Clean(r.URL.Path) != r.URL.Path || !strings.HasPrefix(r.URL.Path, "/"):
			// ServeMux would redirect an unclean path (307); the protocol has no such call.
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such call %q (protocol %d has %s)", r.URL.Path, Version, callList()))
			return
		}
		for _, c := range calls {
			if c.path == r.URL.Path && c.since > v {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("%s is a call of protocol %d; the request speaks %s %d", c.path, c.since, HeaderVersion, v))
				return
			}
		}
		ctx := context.WithValue(r.Context(), spokenKey{}, v)
		if ms := r.Header.Get(HeaderTimeout); ms != "" && v >= 3 {
			n, err := strconv.ParseInt(ms, 10, 64)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("header %s %q: want milliseconds", HeaderTimeout, ms))
				return
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(n)*time.Millisecond)
			defer cancel()
		}
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

// badRequest marks an error of the request itself (400).
type badRequest struct{ error }

func (e badRequest) Unwrap() error { return e.error }

// serialised answers a call that changes the state (prepare, resume, abort): one at a time,
// logged with its duration, its error mapped to a status by statusOf.
func (h *handler) serialised(op string, call func(context.Context, []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		in, err := io.ReadAll(io.LimitReader(r.Body, maxRequest+1))
		if err == nil && len(in) > maxRequest {
			err = fmt.Errorf("more than %d bytes", maxRequest)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: read the request body: %v", op, err))
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		start := time.Now()
		body, err := call(r.Context(), in)
		if err != nil {
			h.logf("kafkahooks: %s failed after %s: %v", op, time.Since(start).Round(time.Millisecond), err)
			writeError(w, statusOf(err), fmt.Sprintf("%s: %v", op, err))
			return
		}
		h.logf("kafkahooks: %s done in %s", op, time.Since(start).Round(time.Millisecond))
		writeJSON(w, http.StatusOK, body)
	}
}

func statusOf(err error) int {
	var br badRequest
	switch {
	case errors.As(err, &br):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotPrepared), errors.Is(err, ErrState):
		return http.StatusConflict
	case errors.Is(err, ErrNoReplay):
		return http.StatusNotImplemented
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(errorResponse{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
