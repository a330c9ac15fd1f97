package agent

import (
	"context"
	"crypto/tls"
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
)

// testAgent is an agent without containerd, for the handlers that never reach it: protocol
// checks, session lookup, request validation and the hook relay (whose task lookup is faked).
func testAgent(t *testing.T) (*Agent, *Client) {
	t.Helper()
	a := &Agent{
		cfg:      Config{Host: "fog", WorkDir: t.TempDir(), SessionTimeout: time.Minute, Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		sessions: map[string]*session{},
		stop:     make(chan struct{}),
	}
	a.taskPid = func(context.Context, string) (uint32, error) { return uint32(os.Getpid()), nil }
	srv := httptest.NewTLSServer(a.Handler())
	t.Cleanup(srv.Close)
	c := NewClient(strings.TrimPrefix(srv.URL, "https://"), &tls.Config{InsecureSkipVerify: true})
	return a, c
}

func TestProtocolMismatchIsRefused(t *testing.T) {
	_, c := testAgent(t)
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
	_, c := testAgent(t)
	s := &SessionClient{c: c, ID: "nope"}
	_, err := s.Verify(context.Background())
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusNotFound || !strings.Contains(re.Message, `no session "nope"`) {
		t.Errorf("err %v: want 404 naming the session", err)
	}
}

func TestBadSessionRequests(t *testing.T) {
	_, c := testAgent(t)
	ok := SessionRequest{Namespace: "ftwin", Container: "twin", CheckpointRef: "ftwin-migrate/checkpoint/twin:1"}
	for _, tc := range []struct {
		name string
		edit func(*SessionRequest)
		want string
	}{
		{"no container", func(r *SessionRequest) { r.Container = "" }, "needs namespace, container and checkpoint_ref"},
		{"tcp mode", func(r *SessionRequest) { r.TCP = "half-open" }, `TCP mode "half-open"`},
		{"relative hook socket", func(r *SessionRequest) { r.HookSocket = "run/hook.sock" }, "absolute path"},
		{"climbing hook socket", func(r *SessionRequest) { r.HookSocket = "/run/../../../etc/hook.sock" }, "clean path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.edit(&r)
			_, err := c.Open(context.Background(), r)
			var re *RemoteError
			if !errors.As(err, &re) || re.Status != http.StatusBadRequest || !strings.Contains(re.Message, tc.want) {
				t.Errorf("err %v: want 400 with %q", err, tc.want)
			}
		})
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
	a, c := testAgent(t)
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

	s := &session{SessionRequest: SessionRequest{Namespace: "ftwin", Container: "twin", HookSocket: sock}, id: "s1", lastUsed: time.Now()}
	a.sessions[s.id] = s
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
