package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/ftwin-migrate/ftwin-migrate/doctor"
	"github.com/ftwin-migrate/ftwin-migrate/hooksock"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// Config configures an agent.
type Config struct {
	// Host names this host in reports and logs.
	Host string
	// Client is the containerd of this host.
	Client *containerd.Client
	// WorkDir holds CRIU config files, cpuinfo checks and restored containers' logs.
	WorkDir string
	// RestoreOpts returns extra restore options for a session (the lab sets a per-host cgroup
	// path here; tests inject failures).
	RestoreOpts func(SessionRequest) []restore.Opt
	// LogPath says where a restored container's stdout and stderr go.
	// Default: WORKDIR/logs/NAMESPACE-ID.log.
	LogPath func(namespace, id string) string
	// Dial is used by health probes. Default: net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// SessionTimeout aborts a session idle this long. Default 2 minutes.
	SessionTimeout time.Duration
	// HeartbeatTimeout aborts a session whose restored, uncommitted copy heard nothing from
	// its migrator this long (the migrator heartbeats meanwhile). Default 15s.
	HeartbeatTimeout time.Duration
	// Namespaces are the containerd namespaces the agent restores into and answers about.
	// Empty: any.
	Namespaces []string
	// Policy is what a restored container's spec may ask for (see Policy); the zero Policy
	// allows only an unprivileged container with namespaces of its own.
	Policy Policy
	// Runtime is the runtime restored containers run under, whatever the checkpoint names:
	// the target's choice, not the peer's. Default io.containerd.runc.v2 with no options.
	Runtime string
	// MaxSessions and MaxSessionsPerPeer cap open sessions. Defaults 32 and 4.
	MaxSessions, MaxSessionsPerPeer int
	// Log receives the agent's log. Default: slog.Default().
	Log *slog.Logger
	// Network gives restored containers that had an address of their own on the source
	// (SessionRequest.Address) the same address here. Nil: such sessions are refused.
	Network Network
}

// Network gives a container on this host the address it had on another (see
// SessionRequest.Address): what a CNI plugin with static addresses does on a flat or overlay
// network, and what the lab does on its bridge.
type Network interface {
	// Prepare makes a network namespace for container id of namespace ns with address a, its
	// link to the network held down (nothing may reach the restored sockets before they are
	// back), and returns its path for the container's spec.
	Prepare(ctx context.Context, ns, id string, a ContainerAddress) (nsPath string, err error)
	// Connect connects the namespace's link and announces the address (gratuitous ARP).
	Connect(ctx context.Context, ns, id string) error
	// Remove removes the namespace (a failed restore, an aborted copy); a no-op when gone.
	Remove(ctx context.Context, ns, id string) error
}

// Agent serves the receiving side of migrations.
type Agent struct {
	cfg      Config
	mu       sync.Mutex
	sessions map[string]*session
	stop     chan struct{}
	stopOnce sync.Once
	// taskPid finds a restored container's task: containerTaskPid, but for tests.
	taskPid func(ctx context.Context, id string) (uint32, error)
	// clockWarning is doctor.Clocks' finding when not OK, asked once (clockOnce) for Hello.
	clockOnce    sync.Once
	clockWarning string
}

type session struct {
	SessionRequest
	id       string
	peer     string // the name in the certificate of the peer that opened it
	ref      string // the checkpoint image's name, CheckpointPrefix + id
	verified bool   // the agent's own verify passed since the last restore
	ctx      context.Context
	cancel   context.CancelFunc // ends the session's requests in flight (abort)
	lease    string
	lastUsed atomic.Int64 // unix nanoseconds of the last request or heartbeat
	restored bool
	imageDir string // where the CRIU image sent to /criu-image was unpacked
	imageSum string // and its digest
	// failedWork are the CRIU work directories of failed restores, kept for their logs until
	// the session ends (abort saves each restore.log beside the agent's logs).
	failedWork []string
	mu         sync.Mutex // one request of a session at a time
}

// restoreTimeout bounds a restore, which runs to its end whatever its caller does (see
// Agent.restore).
const restoreTimeout = 10 * time.Minute

// New returns an agent. Close it to stop its janitor.
func New(cfg Config) (*Agent, error) {
	if cfg.Client == nil {
		return nil, errors.New("agent: Config.Client is nil")
	}
	if cfg.WorkDir == "" {
		return nil, errors.New("agent: Config.WorkDir is empty")
	}
	if err := os.MkdirAll(filepath.Join(cfg.WorkDir, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("agent: work dir: %w", err)
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 2 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = 15 * time.Second
	}
	if cfg.Runtime == "" {
		cfg.Runtime = "io.containerd.runc.v2"
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 32
	}
	if cfg.MaxSessionsPerPeer == 0 {
		cfg.MaxSessionsPerPeer = 4
	}
	a := &Agent{cfg: cfg, sessions: map[string]*session{}, stop: make(chan struct{})}
	a.taskPid = a.containerTaskPid
	if err := a.dropStaleSessions(context.Background()); err != nil {
		return nil, err
	}
	if err := a.removeLeftovers(context.Background()); err != nil {
		return nil, err
	}
	go a.janitor()
	return a, nil
}

// sessionLabel marks the containerd leases of migration sessions.
const sessionLabel = "ftwin-migrate/session"

// dropStaleSessions removes what sessions of an earlier agent process left (one killed
// mid-transfer, say): their leases, and with them every blob received for them. A container
// is only created at restore, after the session's last blob, and such a session's abort or
// commit removed it; none is touched here.
func (a *Agent) dropStaleSessions(ctx context.Context) error {
	nss, err := a.cfg.Client.NamespaceService().List(ctx)
	if err != nil {
		return fmt.Errorf("agent: list containerd namespaces: %w", err)
	}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		ls, err := a.cfg.Client.LeasesService().List(nctx, "labels.\""+sessionLabel+"\"")
		if err != nil {
			return fmt.Errorf("agent: list leases in %s: %w", ns, err)
		}
		for _, l := range ls {
			if err := a.cfg.Client.LeasesService().Delete(nctx, l, leases.SynchronousDelete); err != nil {
				return fmt.Errorf("agent: remove stale session lease %s: %w", l.ID, err)
			}
			a.cfg.Log.Info("removed a stale session", "namespace", ns, "lease", l.ID, "container", l.Labels[sessionLabel])
		}
	}
	return nil
}

// removeLeftovers removes what an earlier agent process left of sessions it can no longer
// finish: restored copies never committed (their migrator has rolled back or will, and a
// copy must not run beside its source), checkpoint images it registered, and its session,
// CRIU restore and cpuinfo directories.
func (a *Agent) removeLeftovers(ctx context.Context) error {
	nss, err := a.cfg.Client.NamespaceService().List(ctx)
	if err != nil {
		return fmt.Errorf("agent: list containerd namespaces: %w", err)
	}
	for _, ns := range nss {
		if a.servesNamespace(ns) != nil {
			continue
		}
		nctx := namespaces.WithNamespace(ctx, ns)
		cs, err := a.cfg.Client.Containers(nctx, `labels."`+RestoredForLabel+`"`)
		if err != nil {
			return fmt.Errorf("agent: list restored containers in %s: %w", ns, err)
		}
		for _, c := range cs {
			labels, err := c.Labels(nctx)
			if err != nil || labels[CommittedLabel] != "" {
				continue
			}
			if t, err := c.Task(nctx, nil); err == nil {
				_, _ = t.Delete(nctx, containerd.WithProcessKill)
			}
			if err := c.Delete(nctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("agent: remove uncommitted restored container %s/%s: %w", ns, c.ID(), err)
			}
			if a.cfg.Network != nil { // its address of its own, if it had one (a no-op otherwise)
				_ = a.cfg.Network.Remove(nctx, ns, c.ID())
			}
			a.cfg.Log.Info("removed an uncommitted restored copy left by an earlier agent", "namespace", ns, "container", c.ID(), "for", labels[RestoredForLabel])
		}
		imgs, err := a.cfg.Client.ImageService().List(nctx)
		if err != nil {
			return fmt.Errorf("agent: list checkpoint images in %s: %w", ns, err)
		}
		for _, img := range imgs {
			if !strings.HasPrefix(img.Name, CheckpointPrefix) {
				continue
			}
			if err := a.cfg.Client.ImageService().Delete(nctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("agent: remove checkpoint image %s: %w", img.Name, err)
			}
		}
	}
	for _, pattern := range []string{"sessions", "criu-restore-*", "cpuinfo-*"} {
		dirs, _ := filepath.Glob(filepath.Join(a.cfg.WorkDir, pattern))
		for _, d := range dirs {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("agent: remove leftover %s: %w", d, err)
			}
		}
	}
	return nil
}

// Close stops the janitor. Open sessions are aborted.
func (a *Agent) Close() {
	a.stopOnce.Do(func() { close(a.stop) })
	a.mu.Lock()
	ids := make([]string, 0, len(a.sessions))
	for id := range a.sessions {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	for _, id := range ids {
		a.abort(context.Background(), id, "agent shutting down")
	}
}

// LogPath is where the restored container's stdout and stderr go.
func (a *Agent) LogPath(namespace, id string) string {
	if a.cfg.LogPath != nil {
		return a.cfg.LogPath(namespace, id)
	}
	return filepath.Join(a.cfg.WorkDir, "logs", namespace+"-"+id+".log")
}

// Handler returns the agent's HTTP handler. Serve it over mutual TLS (pki.ServerConfig).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/hello", a.hello)
	mux.HandleFunc("POST /v1/cpuinfo/check", a.cpuinfoCheck)
	mux.HandleFunc("POST /v1/sessions", a.open)
	mux.HandleFunc("POST /v1/sessions/{id}/missing", a.withSession(a.missing))
	mux.HandleFunc("PUT /v1/sessions/{id}/blobs", a.withSession(a.putBlob))
	mux.HandleFunc("PUT /v1/sessions/{id}/criu-image", a.withSession(a.putImage))
	mux.HandleFunc("POST /v1/sessions/{id}/restore", a.withSession(a.restore))
	mux.HandleFunc("POST /v1/sessions/{id}/verify", a.withSession(a.verify))
	mux.HandleFunc("/v1/sessions/{id}/hook/{path...}", a.withSession(a.hookRelay))
	mux.HandleFunc("POST /v1/sessions/{id}/commit", a.withSession(a.commit))
	mux.HandleFunc("GET /v1/containers/{namespace}/{id}", a.containerState)
	mux.HandleFunc("POST /v1/containers/{namespace}/{id}/abort", a.abortContainer)
	mux.HandleFunc("POST /v1/sessions/{id}/abort", a.abortSession)
	mux.HandleFunc("POST /v1/sessions/{id}/heartbeat", a.heartbeat)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(ProtocolHeader, strconv.Itoa(ProtocolVersion))
		if v := r.Header.Get(ProtocolHeader); v != strconv.Itoa(ProtocolVersion) {
			writeError(w, http.StatusBadRequest, fmt.Errorf("protocol version mismatch: agent %s speaks %d, the migrator speaks %q: run the same ftwin-migrate version on both hosts", a.cfg.Host, ProtocolVersion, v))
			return
		}
		if r.TLS != nil {
			a.cfg.Log.Debug("request", "peer", pki.PeerName(r.TLS), "method", r.Method, "path", r.URL.Path)
		}
		mux.ServeHTTP(w, r)
	})
}

func (a *Agent) hello(w http.ResponseWriter, r *http.Request) {
	h := Hello{Protocol: ProtocolVersion, Host: a.cfg.Host, Arch: runtime.GOARCH}
	if v, err := a.cfg.Client.Version(r.Context()); err == nil {
		h.ContainerdVersion = v.Version
	}
	if out, err := exec.CommandContext(r.Context(), "criu", "--version").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Version: "); ok {
				h.CRIUVersion = strings.TrimSpace(v)
			}
		}
	}
	// The host's kernel, CRIU and runc do not change under a running agent: asked once.
	a.clockOnce.Do(func() {
		if c := doctor.Clocks(r.Context()); c.Status != doctor.OK {
			a.clockWarning = c.Detail + " (" + c.Fix + ")"
		}
	})
	h.ClockWarning = a.clockWarning
	var st unix.Statfs_t
	if unix.Statfs(a.cfg.WorkDir, &st) == nil {
		h.FreeBytes = st.Bavail * uint64(st.Bsize)
	}
	writeJSON(w, h)
}

// cpuinfoCheck runs `criu cpuinfo check` against the source's cpuinfo.img.
func (a *Agent) cpuinfoCheck(w http.ResponseWriter, r *http.Request) {
	dir, err := os.MkdirTemp(a.cfg.WorkDir, "cpuinfo-")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	defer os.RemoveAll(dir)
	f, err := os.Create(filepath.Join(dir, "cpuinfo.img"))
	if err == nil {
		_, err = io.Copy(f, http.MaxBytesReader(w, r.Body, maxRequestBody))
		f.Close()
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("store cpuinfo: %w", err))
		return
	}
	out, err := exec.CommandContext(r.Context(), "criu", "cpuinfo", "check", "-D", dir, "-v1").CombinedOutput()
	if err != nil {
		writeError(w, http.StatusConflict, fmt.Errorf("CPU of %s cannot run the source's CRIU image (criu cpuinfo check: %v): %s", a.cfg.Host, err, strings.TrimSpace(string(out))))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// maxRequestBody bounds the JSON bodies of requests.
const maxRequestBody = 1 << 20

func (a *Agent) open(w http.ResponseWriter, r *http.Request) {
	peer := pki.PeerName(r.TLS)
	if peer == "" {
		writeError(w, http.StatusForbidden, errors.New("no verified client certificate: the agent only serves peers of its CA"))
		return
	}
	req, status, err := a.decodeSessionRequest(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		writeError(w, status, err)
		return
	}
	ctx := namespaces.WithNamespace(r.Context(), req.Namespace)
	if _, err := a.cfg.Client.LoadContainer(ctx, req.Container); err == nil {
		writeError(w, http.StatusConflict, fmt.Errorf("container %q already exists on %s in namespace %s", req.Container, a.cfg.Host, req.Namespace))
		return
	}
	if req.BaseImage != "" {
		if _, err := a.cfg.Client.GetImage(ctx, req.BaseImage); err != nil {
			writeError(w, http.StatusConflict, fmt.Errorf("%s lacks the container's base image %s in namespace %s (%v): import or pull it there first (`ctr -n %s images import`), then migrate", a.cfg.Host, req.BaseImage, req.Namespace, err, req.Namespace))
			return
		}
	}
	if req.Address != nil && a.cfg.Network == nil {
		writeError(w, http.StatusConflict, fmt.Errorf("container %s has an address of its own (%s) and %s cannot give it one: migrate it with --tcp close onto the target's network, or run the agent where it can (a lab host)", req.Container, req.Address.IP, a.cfg.Host))
		return
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	s := &session{SessionRequest: req, id: hex.EncodeToString(b[:]), peer: peer}
	s.touch()
	s.ref = CheckpointPrefix + s.id
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := a.admit(s); err != nil {
		s.cancel()
		writeError(w, http.StatusTooManyRequests, err)
		return
	}
	l, err := a.cfg.Client.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithExpiration(a.cfg.SessionTimeout+time.Hour),
		leases.WithLabels(map[string]string{sessionLabel: req.Container}))
	if err != nil {
		a.drop(s.id)
		writeError(w, http.StatusInternalServerError, fmt.Errorf("take a containerd lease: %w", err))
		return
	}
	s.lease = l.ID
	a.cfg.Log.Info("session opened", "session", s.id, "container", req.Container, "peer", peer, "declared_source", req.SourceHost)
	writeJSON(w, Session{ID: s.id, Timeout: a.cfg.SessionTimeout, HeartbeatTimeout: a.cfg.HeartbeatTimeout})
}

// decodeSessionRequest reads and checks a session request; on error it says which status to
// answer with.
func (a *Agent) decodeSessionRequest(body io.Reader) (SessionRequest, int, error) {
	var req SessionRequest
	if err := json.NewDecoder(body).Decode(&req); err != nil {
		return req, http.StatusBadRequest, fmt.Errorf("bad session request: %w", err)
	}
	if req.Namespace == "" || req.Container == "" {
		return req, http.StatusBadRequest, errors.New("session request needs namespace and container")
	}
	if err := identifiers.Validate(req.Container); err != nil {
		return req, http.StatusBadRequest, fmt.Errorf("container id: %w", err)
	}
	if err := identifiers.Validate(req.Namespace); err != nil {
		return req, http.StatusBadRequest, fmt.Errorf("namespace: %w", err)
	}
	if err := a.servesNamespace(req.Namespace); err != nil {
		return req, http.StatusForbidden, err
	}
	var err error
	if req.TCP, err = restore.ParseTCPMode(string(req.TCP)); err != nil {
		return req, http.StatusBadRequest, err
	}
	if req.HookSocket != "" {
		if err := hooksock.CheckSocket(req.HookSocket); err != nil {
			return req, http.StatusBadRequest, err
		}
	}
	if a := req.Address; a != nil {
		if _, err := netip.ParsePrefix(a.IP); err != nil {
			return req, http.StatusBadRequest, fmt.Errorf("container address %q: want an address with its prefix length, such as 10.231.0.100/24: %w", a.IP, err)
		}
		if _, err := net.ParseMAC(a.MAC); err != nil {
			return req, http.StatusBadRequest, fmt.Errorf("container MAC %q: %w", a.MAC, err)
		}
	}
	if req.Probe != "" && !strings.HasPrefix(req.Probe, "http://") {
		return req, http.StatusBadRequest, fmt.Errorf("probe %q: want an http:// URL", req.Probe)
	}
	return req, 0, nil
}

// servesNamespace refuses a namespace the agent was not configured to serve.
func (a *Agent) servesNamespace(ns string) error {
	if len(a.cfg.Namespaces) == 0 || slices.Contains(a.cfg.Namespaces, ns) {
		return nil
	}
	return fmt.Errorf("namespace %q is not served by the agent on %s (it serves %v)", ns, a.cfg.Host, a.cfg.Namespaces)
}

// admit registers s unless the session caps are reached.
func (a *Agent) admit(s *session) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	mine := 0
	for _, o := range a.sessions {
		if o.peer == s.peer {
			mine++
		}
	}
	switch {
	case len(a.sessions) >= a.cfg.MaxSessions:
		return fmt.Errorf("the agent on %s has %d sessions open, its limit: try again later", a.cfg.Host, len(a.sessions))
	case mine >= a.cfg.MaxSessionsPerPeer:
		return fmt.Errorf("peer %s has %d sessions open on %s, the limit per peer: finish or abort them first", s.peer, mine, a.cfg.Host)
	}
	a.sessions[s.id] = s
	return nil
}

// drop forgets session id without undoing anything.
func (a *Agent) drop(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.sessions[id]; s != nil {
		s.cancel()
		delete(a.sessions, id)
	}
}

func (s *session) touch() { s.lastUsed.Store(time.Now().UnixNano()) }

func (s *session) idle() time.Duration { return time.Since(time.Unix(0, s.lastUsed.Load())) }

// heartbeat keeps a session alive without waiting for a request of it in flight.
func (a *Agent) heartbeat(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	s := a.sessions[r.PathValue("id")]
	a.mu.Unlock()
	switch {
	case s == nil:
		writeError(w, http.StatusNotFound, fmt.Errorf("no session %q on %s (aborted, timed out or never opened)", r.PathValue("id"), a.cfg.Host))
	case s.peer != pki.PeerName(r.TLS):
		writeError(w, http.StatusForbidden, fmt.Errorf("session %s on %s belongs to another peer", s.id, a.cfg.Host))
	default:
		s.touch()
		w.WriteHeader(http.StatusNoContent)
	}
}

// withSession runs h for the session named in the path, if the caller's certificate is the one
// that opened it. The request's context also ends when the session is aborted.
func (a *Agent) withSession(h func(context.Context, *session, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		s := a.sessions[r.PathValue("id")]
		a.mu.Unlock()
		if s == nil {
			writeError(w, http.StatusNotFound, fmt.Errorf("no session %q on %s (aborted, timed out or never opened)", r.PathValue("id"), a.cfg.Host))
			return
		}
		if peer := pki.PeerName(r.TLS); peer != s.peer {
			writeError(w, http.StatusForbidden, fmt.Errorf("session %s on %s belongs to another peer than %q", s.id, a.cfg.Host, peer))
			return
		}
		rctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ctx.Err() != nil {
			writeError(w, http.StatusNotFound, fmt.Errorf("session %s on %s was aborted", s.id, a.cfg.Host))
			return
		}
		s.touch()
		defer s.touch()
		ctx := leases.WithLease(namespaces.WithNamespace(rctx, s.Namespace), s.lease)
		h(ctx, s, w, r)
	}
}

func (a *Agent) missing(ctx context.Context, _ *session, w http.ResponseWriter, r *http.Request) {
	var want []ocispec.Descriptor
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody)).Decode(&want); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	cs := a.cfg.Client.ContentStore()
	missing := []ocispec.Descriptor{}
	for _, d := range want {
		if _, err := cs.Info(ctx, d.Digest); errdefs.IsNotFound(err) {
			missing = append(missing, d)
		} else if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		} else {
			// Present already: make sure this session's lease holds it too.
			_ = a.cfg.Client.LeasesService().AddResource(ctx, leases.Lease{ID: leaseOf(ctx)}, leases.Resource{ID: d.Digest.String(), Type: "content"})
		}
	}
	writeJSON(w, missing)
}

func leaseOf(ctx context.Context) string { id, _ := leases.FromContext(ctx); return id }

func (a *Agent) putBlob(ctx context.Context, _ *session, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dgst, err := digest.Parse(q.Get("digest"))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad digest: %w", err))
		return
	}
	size, err := strconv.ParseInt(q.Get("size"), 10, 64)
	if err != nil || size < 0 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad size %q", q.Get("size")))
		return
	}
	if free := a.freeBytes(); size > free {
		writeError(w, http.StatusInsufficientStorage, fmt.Errorf("blob %s of %d MiB does not fit in the %d MiB free on %s", dgst, size>>20, free>>20, a.cfg.Host))
		return
	}
	desc := ocispec.Descriptor{Digest: dgst, Size: size, MediaType: q.Get("mediatype")}
	body := streamBody(w, r)
	receive := func() error { return transfer.Receive(ctx, a.cfg.Client.ContentStore(), desc, body) }
	if dir, ok := transfer.LocalStore(ctx, a.cfg.Client); ok {
		receive = func() error { return transfer.ReceiveLocal(ctx, dir, a.cfg.Client.ContentStore(), desc, body) }
	}
	if err := receive(); err != nil {
		status := http.StatusInternalServerError
		if errdefs.IsFailedPrecondition(err) || strings.Contains(err.Error(), "unexpected commit digest") || strings.Contains(err.Error(), "unexpected commit size") || strings.Contains(err.Error(), "zstd") {
			status = http.StatusUnprocessableEntity
		}
		writeError(w, status, fmt.Errorf("blob %s rejected: %w", dgst, err))
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// putImage unpacks a CRIU image directory sent by transfer.PushDir into the session's directory.
func (a *Agent) putImage(_ context.Context, s *session, w http.ResponseWriter, r *http.Request) {
	dir := filepath.Join(a.sessionDir(s.id), "criu-image")
	_ = os.RemoveAll(dir)
	// The image may take what is free, less a margin for the restore itself.
	budget := a.freeBytes() - 256<<20
	if budget <= 0 {
		writeError(w, http.StatusInsufficientStorage, fmt.Errorf("no room for a CRIU image on %s: free some space", a.cfg.Host))
		return
	}
	sum, err := transfer.ReceiveDir(streamBody(w, r), dir, budget)
	if err != nil {
		_ = os.RemoveAll(dir)
		writeError(w, http.StatusUnprocessableEntity, fmt.Errorf("CRIU image rejected: %w", err))
		return
	}
	s.imageDir, s.imageSum = dir, sum
	writeJSON(w, ImageReceived{Digest: sum})
}

// freeBytes is the space free where the agent keeps CRIU images.
func (a *Agent) freeBytes() int64 {
	var st unix.Statfs_t
	if unix.Statfs(a.cfg.WorkDir, &st) != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// Streams must keep moving: each read deadline is readStall away, and it is extended only
// after another minProgress bytes arrived, so a trickle (a byte every few seconds) ends the
// request instead of holding its session for ever.
const (
	readStall   = 30 * time.Second
	minProgress = 64 << 10
)

// streamBody returns r's body with read deadlines that extend while data flows.
func streamBody(w http.ResponseWriter, r *http.Request) io.Reader {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(readStall))
	return &progressReader{r: r.Body, rc: rc}
}

type progressReader struct {
	r     io.Reader
	rc    *http.ResponseController
	since int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if p.since += int64(n); p.since >= minProgress {
		p.since = 0
		_ = p.rc.SetReadDeadline(time.Now().Add(readStall))
	}
	return n, err
}

func (a *Agent) sessionDir(id string) string { return filepath.Join(a.cfg.WorkDir, "sessions", id) }

func (a *Agent) restore(ctx context.Context, s *session, w http.ResponseWriter, r *http.Request) {
	var req RestoreRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if s.restored {
		writeError(w, http.StatusConflict, fmt.Errorf("session %s already restored %s", s.id, s.Container))
		return
	}
	// The agent names the image itself and never updates one: a peer cannot repoint (nor, by
	// aborting, delete) an image of this host.
	is := a.cfg.Client.ImageService()
	img := images.Image{Name: s.ref, Target: req.Index}
	if _, err := is.Create(ctx, img); err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("register checkpoint image %s: %w", s.ref, err))
		return
	}
	tcp, err := restore.WithTCP(s.TCP, a.cfg.WorkDir)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	work, err := os.MkdirTemp(a.cfg.WorkDir, "criu-restore-")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	restored := false
	defer func() {
		// A failed restore's CRIU log stays until the session ends (its error names it and
		// quotes its end); a successful one's goes now.
		if restored {
			_ = os.RemoveAll(work)
		} else {
			s.failedWork = append(s.failedWork, work)
		}
	}()
	var netEdits []restore.Opt
	if s.Address != nil {
		nsPath, err := a.cfg.Network.Prepare(ctx, s.Namespace, s.Container, *s.Address)
		if err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Errorf("network of %s: %w", s.Container, err))
			return
		}
		defer func() {
			if !restored {
				_ = a.cfg.Network.Remove(context.WithoutCancel(ctx), s.Namespace, s.Container)
			}
		}()
		// The peer's network namespace path names a namespace of the source host: the policy
		// judges the container as one with a namespace of its own, which it gets here.
		netEdits = []restore.Opt{restore.WithNetworkNamespace(""), restore.WithSpecEdit(a.cfg.Policy.Check), restore.WithNetworkNamespace(nsPath)}
	} else {
		// The policy sees the spec as the peer sent it, before this host's own edits.
		netEdits = []restore.Opt{restore.WithSpecEdit(a.cfg.Policy.Check)}
	}
	opts := []restore.Opt{
		restore.WithRuntime(a.cfg.Runtime),
		restore.WithLabels(map[string]string{RestoredForLabel: s.peer}),
		restore.WithLogFile(a.LogPath(s.Namespace, s.Container)),
		restore.WithCRIUWorkPath(work),
		tcp,
	}
	if req.ImageDigest != "" {
		if s.imageDir == "" || s.imageSum != req.ImageDigest {
			writeError(w, http.StatusConflict, fmt.Errorf("no CRIU image with digest %s was received (have %q)", req.ImageDigest, s.imageSum))
			return
		}
		opts = append(opts, restore.WithCRIUImagePath(s.imageDir))
	}
	if a.cfg.RestoreOpts != nil {
		opts = append(opts, a.cfg.RestoreOpts(s.SessionRequest)...)
	}
	// The restore runs to its end even if the caller goes away or the session is aborted
	// meanwhile: cut short, containerd may have started the copy while the cancelled client
	// call can no longer remove it (seen: a migrator killed as its copy started left the copy
	// running, unknown to the session). Done, it is the session's, and an abort (which waits
	// for this request) removes it.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), restoreTimeout)
	defer cancel()
	res, err := restore.Restore(rctx, a.cfg.Client, s.Container, s.ref, append(netEdits, opts...)...)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, errPolicy) {
			status = http.StatusForbidden
		}
		writeError(w, status, err)
		return
	}
	restored = true
	s.restored, s.verified = true, false
	if s.Address != nil {
		if err := a.cfg.Network.Connect(ctx, s.Namespace, s.Container); err != nil {
			// The copy runs but cannot be reached: it is the migrator's to abort.
			writeError(w, http.StatusInternalServerError, fmt.Errorf("restored %s but could not connect its address %s: %w", s.Container, s.Address.IP, err))
			return
		}
	}
	a.cfg.Log.Info("restored", "session", s.id, "container", s.Container, "in", res.Duration)
	writeJSON(w, RestoreResult{Duration: res.Duration, Pid: res.Task.Pid(), CRIU: res.CRIU, Log: a.LogPath(s.Namespace, s.Container)})
}

// hookRelay relays a request to the restored container's application hook, through the
// task's root (SOCKET resolved inside /proc/PID/root, see hooksock): no port is published on the host. The method, the path
// below .../hook, the headers named Ftwin-Hook-* and the body (at most hooksock.MaxAnswer
// bytes) go to the hook as they are, and its answer comes back as it is, marked with
// RelayHeader. The agent knows nothing of the hook's protocol.
func (a *Agent) hookRelay(ctx context.Context, s *session, w http.ResponseWriter, r *http.Request) {
	if s.HookSocket == "" || !s.restored {
		writeError(w, http.StatusConflict, errors.New("no hook to reach: the session named no hook socket, or nothing was restored yet"))
		return
	}
	pid, err := a.taskPid(ctx, s.Container)
	if err != nil {
		writeError(w, http.StatusConflict, fmt.Errorf("restored container %s has no task: %w", s.Container, err))
		return
	}
	sock, err := hooksock.InContainer(pid, s.HookSocket)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, hooksock.MaxAnswer+1))
	if err == nil && len(body) > hooksock.MaxAnswer {
		err = fmt.Errorf("more than %d bytes", hooksock.MaxAnswer)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("hook request body: %w", err))
		return
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://ftwin-hook/"+r.PathValue("path"), bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("hook request: %w", err))
		return
	}
	for k, v := range r.Header {
		if strings.HasPrefix(k, HookHeaderPrefix) {
			req.Header[k] = v
		}
	}
	resp, err := sock.Transport().RoundTrip(req)
	if err != nil {
		writeError(w, http.StatusBadGateway, fmt.Errorf("hook of %s on %s: %w", s.Container, a.cfg.Host, err))
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		if strings.HasPrefix(k, HookHeaderPrefix) || k == "Content-Type" {
			w.Header()[k] = v
		}
	}
	w.Header().Set(RelayHeader, "hook")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// containerTaskPid returns the pid of container id's task in this host's containerd.
func (a *Agent) containerTaskPid(ctx context.Context, id string) (uint32, error) {
	c, err := a.cfg.Client.LoadContainer(ctx, id)
	if err != nil {
		return 0, err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return 0, err
	}
	return t.Pid(), nil
}

func (a *Agent) verify(ctx context.Context, s *session, w http.ResponseWriter, r *http.Request) {
	var res VerifyResult
	c, err := a.cfg.Client.LoadContainer(ctx, s.Container)
	if err == nil {
		var t containerd.Task
		if t, err = c.Task(ctx, nil); err == nil {
			var st containerd.Status
			if st, err = t.Status(ctx); err == nil {
				res.Running = st.Status == containerd.Running
			}
		}
	}
	if err != nil || !res.Running {
		writeError(w, http.StatusConflict, fmt.Errorf("restored container %s is not running on %s (%v)", s.Container, a.cfg.Host, err))
		return
	}
	if s.Probe != "" {
		if err := a.probe(ctx, s.Probe); err != nil {
			writeError(w, http.StatusConflict, fmt.Errorf("health probe %s on %s failed: %w", s.Probe, a.cfg.Host, err))
			return
		}
		res.Probe = "ok"
	}
	s.verified = true
	writeJSON(w, res)
}

// probe GETs url until it answers 2xx, for at most 10 seconds.
func (a *Agent) probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: a.cfg.Dial}, Timeout: 2 * time.Second}
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a *Agent) commit(ctx context.Context, s *session, w http.ResponseWriter, r *http.Request) {
	if !s.restored || !s.verified {
		writeError(w, http.StatusConflict, fmt.Errorf("nothing to commit: %s was not restored and verified in session %s", s.Container, s.id))
		return
	}
	bg := namespaces.WithNamespace(context.WithoutCancel(ctx), s.Namespace)
	// The label is what tells a recovering migrator that this host owns the container now.
	c, err := a.cfg.Client.LoadContainer(bg, s.Container)
	if err == nil {
		_, err = c.SetLabels(bg, map[string]string{CommittedLabel: s.id})
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("mark %s committed: %w", s.Container, err))
		return
	}
	a.drop(s.id)
	// The container holds its snapshot; the CRIU image is no longer needed.
	_ = a.cfg.Client.ImageService().Delete(bg, s.ref)
	_ = a.cfg.Client.LeasesService().Delete(bg, leases.Lease{ID: s.lease})
	_ = os.RemoveAll(a.sessionDir(s.id))
	a.cfg.Log.Info("committed", "session", s.id, "container", s.Container)
	w.WriteHeader(http.StatusNoContent)
}

// sessionFor returns the open session restoring container id in namespace ns, or nil.
func (a *Agent) sessionFor(ns, id string) *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.sessions {
		if s.Namespace == ns && s.Container == id {
			return s
		}
	}
	return nil
}

// peerContainer checks that the caller may ask about container id in ns: the agent serves the
// namespace, and the container, if there, was restored here for this caller. It returns the
// caller's name, the open session restoring the container (nil if none, or another peer's) and
// the container (nil if absent).
func (a *Agent) peerContainer(ctx context.Context, ns, id, peer string) (*session, containerd.Container, error) {
	if peer == "" {
		return nil, nil, errors.New("no verified client certificate")
	}
	if err := a.servesNamespace(ns); err != nil {
		return nil, nil, err
	}
	s := a.sessionFor(ns, id)
	if s != nil && s.peer != peer {
		return nil, nil, fmt.Errorf("%s is being restored on %s for another peer", id, a.cfg.Host)
	}
	c, err := a.cfg.Client.LoadContainer(ctx, id)
	if err != nil {
		return s, nil, nil
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return nil, nil, err
	}
	if labels[RestoredForLabel] != peer {
		return nil, nil, fmt.Errorf("%s on %s was not restored here for %s", id, a.cfg.Host, peer)
	}
	return s, c, nil
}

func (a *Agent) containerState(w http.ResponseWriter, r *http.Request) {
	ns, id := r.PathValue("namespace"), r.PathValue("id")
	ctx := namespaces.WithNamespace(r.Context(), ns)
	s, c, err := a.peerContainer(ctx, ns, id, pki.PeerName(r.TLS))
	if err != nil {
		writeError(w, http.StatusForbidden, err)
		return
	}
	var st ContainerState
	if s != nil {
		st.Session = s.id
	}
	if c != nil {
		st.Exists = true
		if labels, err := c.Labels(ctx); err == nil {
			st.Committed = labels[CommittedLabel] != ""
		}
		if t, err := c.Task(ctx, nil); err == nil {
			if ts, err := t.Status(ctx); err == nil {
				st.Running = ts.Status == containerd.Running
			}
		}
	}
	writeJSON(w, st)
}

// abortContainer undoes an uncommitted migration of a container for the peer it was restored
// for: its open session is aborted, or, with no session (the agent restarted), the uncommitted
// restored copy is removed.
func (a *Agent) abortContainer(w http.ResponseWriter, r *http.Request) {
	ns, id := r.PathValue("namespace"), r.PathValue("id")
	ctx := namespaces.WithNamespace(r.Context(), ns)
	s, c, err := a.peerContainer(ctx, ns, id, pki.PeerName(r.TLS))
	if err != nil {
		writeError(w, http.StatusForbidden, err)
		return
	}
	if s != nil {
		a.abort(r.Context(), s.id, "aborted by a recovering migrator")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if c == nil {
		w.WriteHeader(http.StatusNoContent) // nothing here
		return
	}
	if labels, _ := c.Labels(ctx); labels[CommittedLabel] != "" {
		writeError(w, http.StatusConflict, fmt.Errorf("%s was committed on %s: it is not undone", id, a.cfg.Host))
		return
	}
	if t, err := c.Task(ctx, nil); err == nil {
		_, _ = t.Delete(ctx, containerd.WithProcessKill)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("remove uncommitted %s: %w", id, err))
		return
	}
	if a.cfg.Network != nil { // its address of its own, if it had one (a no-op otherwise)
		_ = a.cfg.Network.Remove(ctx, ns, id)
	}
	w.WriteHeader(http.StatusNoContent)
}

// abortSession aborts a session of the caller's; a session already gone is no error.
func (a *Agent) abortSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a.mu.Lock()
	s := a.sessions[id]
	a.mu.Unlock()
	if s != nil && s.peer != pki.PeerName(r.TLS) {
		writeError(w, http.StatusForbidden, fmt.Errorf("session %s on %s belongs to another peer", id, a.cfg.Host))
		return
	}
	a.abort(r.Context(), id, "aborted by the migrator")
	w.WriteHeader(http.StatusNoContent)
}

// abort removes everything session id made: the restored container and task, the checkpoint
// image and (through the lease) every blob received.
func (a *Agent) abort(ctx context.Context, id, why string) {
	a.mu.Lock()
	s := a.sessions[id]
	delete(a.sessions, id)
	a.mu.Unlock()
	if s == nil {
		return
	}
	// End the session's requests in flight (a stalled upload, say) instead of waiting for them.
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx = namespaces.WithNamespace(context.WithoutCancel(ctx), s.Namespace)
	if c, err := a.cfg.Client.LoadContainer(ctx, s.Container); err == nil && (s.restored || a.strayCopy(ctx, c, s.peer)) {
		if t, err := c.Task(ctx, nil); err == nil {
			_, _ = t.Delete(ctx, containerd.WithProcessKill)
		}
		_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
		if s.Address != nil {
			_ = a.cfg.Network.Remove(ctx, s.Namespace, s.Container)
		}
	}
	_ = a.cfg.Client.ImageService().Delete(ctx, s.ref)
	_ = a.cfg.Client.LeasesService().Delete(ctx, leases.Lease{ID: s.lease}, leases.SynchronousDelete)
	_ = os.RemoveAll(a.sessionDir(id))
	for i, work := range s.failedWork {
		_ = os.Rename(filepath.Join(work, "restore.log"), filepath.Join(a.cfg.WorkDir, "logs", fmt.Sprintf("restore-%s-%d.log", id, i)))
		_ = os.RemoveAll(work)
	}
	a.cfg.Log.Info("session aborted", "session", id, "container", s.Container, "why", why)
}

// strayCopy reports whether c, found under the name a session restores while that session
// never marked a restore done, is an uncommitted copy restored here for peer: what a restore
// that failed without cleaning up after itself leaves. Only such a copy is the session's to
// remove; the host's own containers and committed copies are not.
func (a *Agent) strayCopy(ctx context.Context, c containerd.Container, peer string) bool {
	labels, err := c.Labels(ctx)
	return err == nil && labels[RestoredForLabel] == peer && labels[CommittedLabel] == ""
}

func (a *Agent) janitor() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		var idle, quiet []string
		a.mu.Lock()
		for id, s := range a.sessions {
			if s.mu.TryLock() {
				switch idleFor := s.idle(); {
				case idleFor > a.cfg.SessionTimeout:
					idle = append(idle, id)
				case s.restored && idleFor > a.cfg.HeartbeatTimeout:
					// A restored, uncommitted copy whose migrator went quiet: it must not run
					// beside a source the migrator may thaw.
					quiet = append(quiet, id)
				}
				s.mu.Unlock()
			}
		}
		a.mu.Unlock()
		for _, id := range idle {
			a.abort(context.Background(), id, "idle past the session timeout")
		}
		for _, id := range quiet {
			a.abort(context.Background(), id, "no heartbeat from the migrator while its copy ran uncommitted")
		}
	}
}

// Sessions returns the ids of open sessions.
func (a *Agent) Sessions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.sessions))
	for id := range a.sessions {
		ids = append(ids, id)
	}
	return ids
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: err.Error()})
}
