package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

// testPKI makes a CA with the agent's host fog and two peers, cloud and edge.
func testPKI(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.Init(dir, []pki.Host{{Name: "fog"}, {Name: "cloud"}, {Name: "edge"}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testAgent is an agent without containerd, served over mutual TLS, for the handlers that
// never reach containerd: protocol checks, session lookup and ownership, request validation
// and the hook relay (whose task lookup is faked). It returns a client for peer cloud.
func testAgent(t *testing.T) (*Agent, *Client, func(peer string) *Client) {
	t.Helper()
	dir := testPKI(t)
	a := &Agent{
		cfg:      Config{Host: "fog", WorkDir: t.TempDir(), SessionTimeout: time.Minute, Namespaces: []string{"ftwin"}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		sessions: map[string]*session{},
		stop:     make(chan struct{}),
	}
	a.taskPid = func(context.Context, string) (uint32, error) { return uint32(os.Getpid()), nil }
	srv := httptest.NewUnstartedServer(a.Handler())
	var err error
	if srv.TLS, err = pki.ServerConfig(dir, "fog"); err != nil {
		t.Fatal(err)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	peer := func(name string) *Client {
		cfg, err := pki.ClientConfig(dir, name, "fog")
		if err != nil {
			t.Fatal(err)
		}
		return NewClient(strings.TrimPrefix(srv.URL, "https://"), cfg)
	}
	return a, peer("cloud"), peer
}

// addSession registers an open session of peer without containerd.
func addSession(a *Agent, id, peer string, req SessionRequest) *session {
	s := &session{SessionRequest: req, id: id, peer: peer, ref: CheckpointPrefix + id, lastUsed: time.Now()}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	a.sessions[id] = s
	return s
}

func TestProtocolMismatchIsRefused(t *testing.T) {
	_, c, _ := testAgent(t)
	req, _ := http.NewRequest(http.MethodGet, c.base+"/v1/hello", nil)
	req.Header.Set(ProtocolHeader, strconv.Itoa(ProtocolVersion+1))
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "run the same ftwin-migrate version on both hosts") {
		t.Errorf("%d %s: want 400 naming the fix", resp.StatusCode, body)
	}
}

func TestUnknownSession(t *testing.T) {
	_, c, _ := testAgent(t)
	s := &SessionClient{c: c, ID: "nope"}
	_, err := s.Verify(context.Background())
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusNotFound || !strings.Contains(re.Message, `no session "nope"`) {
		t.Errorf("err %v: want 404 naming the session", err)
	}
}

func TestBadSessionRequests(t *testing.T) {
	_, c, _ := testAgent(t)
	ok := SessionRequest{Namespace: "ftwin", Container: "twin"}
	for _, tc := range []struct {
		name   string
		edit   func(*SessionRequest)
		status int
		want   string
	}{
		{"no container", func(r *SessionRequest) { r.Container = "" }, 400, "needs namespace and container"},
		{"container id", func(r *SessionRequest) { r.Container = "../etc" }, 400, "container id"},
		{"namespace not served", func(r *SessionRequest) { r.Namespace = "k8s.io" }, 403, `namespace "k8s.io" is not served`},
		{"tcp mode", func(r *SessionRequest) { r.TCP = "half-open" }, 400, `TCP mode "half-open"`},
		{"relative hook socket", func(r *SessionRequest) { r.HookSocket = "run/hook.sock" }, 400, "absolute path"},
		{"climbing hook socket", func(r *SessionRequest) { r.HookSocket = "/run/../../../etc/hook.sock" }, 400, "clean path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.edit(&r)
			_, err := c.Open(context.Background(), r)
			var re *RemoteError
			if !errors.As(err, &re) || re.Status != tc.status || !strings.Contains(re.Message, tc.want) {
				t.Errorf("err %v: want %d with %q", err, tc.status, tc.want)
			}
		})
	}
}

func TestHugeSessionRequestIsRefused(t *testing.T) {
	_, c, _ := testAgent(t)
	body := `{"namespace":"ftwin","container":"twin","source_host":"` + strings.Repeat("x", 2<<20) + `"}`
	err := c.do(context.Background(), http.MethodPost, "/v1/sessions", strings.NewReader(body), nil)
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusBadRequest || !strings.Contains(re.Message, "too large") {
		t.Errorf("err %v: want 400 for a body over the limit", err)
	}
}

// TestSessionsBelongToThePeerThatOpenedThem: another certificate of the same CA can neither
// drive, commit nor abort a session it did not open.
func TestSessionsBelongToThePeerThatOpenedThem(t *testing.T) {
	a, _, peer := testAgent(t)
	addSession(a, "s1", "cloud", SessionRequest{Namespace: "ftwin", Container: "twin"})
	edge := &SessionClient{c: peer("edge"), ID: "s1"}
	for name, call := range map[string]func(context.Context) error{
		"verify": func(ctx context.Context) error { _, err := edge.Verify(ctx); return err },
		"commit": edge.Commit,
		"abort":  edge.Abort,
	} {
		err := call(context.Background())
		var re *RemoteError
		if !errors.As(err, &re) || re.Status != http.StatusForbidden || !strings.Contains(re.Message, "belongs to another peer") {
			t.Errorf("%s by another peer: %v, want 403", name, err)
		}
	}
	if a.sessions["s1"] == nil {
		t.Fatal("another peer's abort removed the session")
	}
}

// TestCommitNeedsAVerifyTheAgentSaw: a restored copy the agent did not see pass verify is not
// committed.
func TestCommitNeedsAVerifyTheAgentSaw(t *testing.T) {
	a, c, _ := testAgent(t)
	s := addSession(a, "s1", "cloud", SessionRequest{Namespace: "ftwin", Container: "twin"})
	s.restored = true
	err := (&SessionClient{c: c, ID: "s1"}).Commit(context.Background())
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusConflict || !strings.Contains(re.Message, "not restored and verified") {
		t.Errorf("commit before verify: %v, want 409", err)
	}
}

// stubParticipant answers resume with fixed offsets.
type stubParticipant struct{}

func (stubParticipant) Prepare(context.Context) (kafkahooks.Boundary, error) {
	return kafkahooks.Boundary{}, nil
}
func (stubParticipant) Resume(context.Context) (kafkahooks.Offsets, error) {
	return kafkahooks.Offsets{"sensors": {0: 42}}, nil
}
func (stubParticipant) Abort(context.Context) error { return nil }
func (stubParticipant) Status() kafkahooks.Status {
	return kafkahooks.Status{Protocol: kafkahooks.Version, State: kafkahooks.StateRunning}
}

// TestHookRelay: the relay carries a hook call to the container's socket and its answer back
// as they are, without knowing the protocol; errors of the relay itself stay the agent's.
func TestHookRelay(t *testing.T) {
	a, c, _ := testAgent(t)
	// The "container" is this process: its hook socket is reached through /proc/PID/root.
	dir, err := os.MkdirTemp("", "ftwin-relay-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "hook.sock")
	ln, err := kafkahooks.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- kafkahooks.Serve(ctx, stubParticipant{}, kafkahooks.WithListener(ln)) }()
	t.Cleanup(func() { cancel(); <-served })

	s := addSession(a, "s1", "cloud", SessionRequest{Namespace: "ftwin", Container: "twin", HookSocket: sock})
	sc := &SessionClient{c: c, ID: s.id}
	hook := kafkahooks.NewClient(sc.HookTransport(), "relay")

	// Nothing restored yet: the relay refuses, as the agent.
	_, err = hook.Resume(context.Background())
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusConflict {
		t.Fatalf("resume before restore: %v, want the agent's 409", err)
	}

	s.restored = true
	offs, err := hook.Resume(context.Background())
	if err != nil || offs["sensors"][0] != 42 {
		t.Fatalf("resume through the relay: %v, %v", offs, err)
	}
	st, err := hook.Status(context.Background())
	if err != nil || st.State != kafkahooks.StateRunning {
		t.Fatalf("status through the relay: %+v, %v", st, err)
	}
	// The hook's own error answers come back as the hook's, not the agent's.
	req, _ := http.NewRequest(http.MethodGet, "http://hook/v1/no-such-call", nil)
	req.Header.Set(kafkahooks.HeaderVersion, strconv.Itoa(kafkahooks.Version))
	resp, err := sc.HookTransport().RoundTrip(req)
	if err != nil {
		t.Fatalf("unknown call through the relay: %v, want the hook's answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get(RelayHeader) != "hook" {
		t.Errorf("unknown call: %d (relay %q), want the hook's 404", resp.StatusCode, resp.Header.Get(RelayHeader))
	}
}
