package kafkahooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// calls are the protocol's calls: path and method.
var calls = []struct{ method, path string }{
	{http.MethodPost, "/v1/prepare"},
	{http.MethodPost, "/v1/resume"},
	{http.MethodPost, "/v1/abort"},
	{http.MethodGet, "/v1/status"},
}

type handler struct {
	p    Participant
	logf func(format string, args ...any)
	mu   sync.Mutex // serialises prepare, resume and abort
}

func newHandler(p Participant, logf func(string, ...any)) http.Handler {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	h := &handler{p: p, logf: logf}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/prepare", h.serialised("prepare", func(ctx context.Context) (any, error) {
		b, err := h.p.Prepare(ctx)
		b.Protocol = Version
		return b, err
	}))
	mux.HandleFunc("POST /v1/resume", h.serialised("resume", func(ctx context.Context) (any, error) {
		offs, err := h.p.Resume(ctx)
		return resumeResponse{Protocol: Version, Offsets: offs}, err
	}))
	mux.HandleFunc("POST /v1/abort", h.serialised("abort", func(ctx context.Context) (any, error) {
		return struct{}{}, h.p.Abort(ctx)
	}))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, h.p.Status())
	})
	// The patterns above win over these for their method: what is left is a wrong method
	// (405) or an unknown path (404), answered in JSON as every other error.
	for _, c := range calls {
		mux.HandleFunc(c.path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", c.method)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", c.path, c.method, r.Method))
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such call %s (protocol %d has /v1/prepare, /v1/resume, /v1/abort, /v1/status)", r.URL.Path, Version))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderVersion, strconv.Itoa(Version))
		w.Header().Set("Connection", "close")
		switch v := r.Header.Get(HeaderVersion); {
		case v == strconv.Itoa(Version) && (path.Clean(r.URL.Path) != r.URL.Path || !strings.HasPrefix(r.URL.Path, "/")):
			// ServeMux would redirect an unclean path (307); the protocol has no such call.
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such call %q (protocol %d has /v1/prepare, /v1/resume, /v1/abort, /v1/status)", r.URL.Path, Version))
		case v == strconv.Itoa(Version):
			mux.ServeHTTP(w, r)
		case v == "":
			writeError(w, http.StatusBadRequest, fmt.Sprintf("missing header %s (this server speaks protocol %d)", HeaderVersion, Version))
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("protocol mismatch: the client speaks %s %q, this server speaks %d", HeaderVersion, v, Version))
		}
	})
}

// serialised answers a call that changes the state (prepare, resume, abort): one at a time,
// logged with its duration, its error mapped to a status by statusOf.
func (h *handler) serialised(op string, call func(context.Context) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		start := time.Now()
		body, err := call(r.Context())
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
	switch {
	case errors.Is(err, ErrNotPrepared):
		return http.StatusConflict
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
