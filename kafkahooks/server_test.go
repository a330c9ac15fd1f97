package kafkahooks

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a Participant with the protocol's state machine and no Kafka.
type fake struct {
	mu       sync.Mutex
	state    State
	offs     Offsets
	prepares int // real prepares, not the idempotent repeats
	resumes  int
	aborts   int
	block    chan struct{} // when set, Prepare waits for it
}

func newFake() *fake {
	return &fake{state: StateRunning, offs: Offsets{"sensors": {0: 10, 1: 20}}}
}

func (f *fake) Prepare(ctx context.Context) (Boundary, error) {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return Boundary{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != StatePrepared {
		f.prepares++
		f.offs["sensors"][0] += 5 // processing went on until the boundary
		f.state = StatePrepared
	}
	return Boundary{Group: "g", MemberID: "twin-1-abc", InstanceID: "twin-1", Generation: 3,
		Transactional: true, Offsets: f.offs, RecordsProcessed: 42}, nil
}

func (f *fake) Resume(context.Context) (Offsets, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != StatePrepared {
		return nil, ErrNotPrepared
	}
	f.resumes++
	f.state = StateRunning
	return f.offs, nil
}

func (f *fake) Abort(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == StatePrepared {
		f.aborts++
		f.state = StateRunning
	}
	return nil
}

func (f *fake) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{Protocol: Version, State: f.state, Offsets: f.offs}
}

// serve starts Serve for p on a socket in a temporary directory and returns the socket path.
func serve(t *testing.T, p Participant) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "hook.sock") // Listen creates run/
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, p, WithListener(ln)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// raw sends one request with the given protocol header (none if empty) and returns the status
// and the decoded error message.
func raw(t *testing.T, path, method, url, version string) (int, string) {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(method, "http://x"+url, nil)
	if version != "" {
		req.Header.Set(HeaderVersion, version)
	}
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get(HeaderVersion); got != "3" {
		t.Errorf("response header %s = %q, want 3", HeaderVersion, got)
	}
	var e errorResponse
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

func TestVersionMismatch(t *testing.T) {
	path := serve(t, newFake())
	code, msg := raw(t, path, "POST", "/v1/prepare", "4")
	if code != http.StatusBadRequest || !strings.Contains(msg, `"4"`) || !strings.Contains(msg, "speaks 1 to 3") {
		t.Errorf("protocol 4: got %d %q, want 400 naming the versions", code, msg)
	}
	if code, msg = raw(t, path, "POST", "/v2/shadow", "1"); code != http.StatusBadRequest || !strings.Contains(msg, "call of protocol 2") {
		t.Errorf("a version 2 call spoken as version 1: got %d %q, want 400", code, msg)
	}
	if code, msg = raw(t, path, "POST", "/v2/shadow", "2"); code != http.StatusNotImplemented || !strings.Contains(msg, "cannot be migrated by replay") {
		t.Errorf("shadow on an application that cannot replay: got %d %q, want 501", code, msg)
	}
	code, msg = raw(t, path, "GET", "/v1/status", "")
	if code != http.StatusBadRequest || !strings.Contains(msg, HeaderVersion) {
		t.Errorf("no header: got %d %q, want 400 naming the header", code, msg)
	}
	if code, _ = raw(t, path, "GET", "/v1/prepare", "1"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/prepare: got %d, want 405", code)
	}
	if code, _ = raw(t, path, "POST", "/v2/prepare", "1"); code != http.StatusNotFound {
		t.Errorf("POST /v2/prepare: got %d, want 404", code)
	}
}

func TestPrepareResumeAbort(t *testing.T) {
	f := newFake()
	c := Dial(serve(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := c.Resume(ctx); !errors.Is(err, ErrNotPrepared) {
		t.Fatalf("resume while running: got %v, want ErrNotPrepared (409)", err)
	}
	var he *Error
	if _, err := c.Resume(ctx); !errors.As(err, &he) || he.StatusCode != http.StatusConflict || he.Op != "resume" {
		t.Fatalf("resume while running: got %#v, want *Error 409", err)
	}

	b1, err := c.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Boundary{Protocol: 3, Group: "g", MemberID: "twin-1-abc", InstanceID: "twin-1", Generation: 3,
		Transactional: true, Offsets: Offsets{"sensors": {0: 15, 1: 20}}, RecordsProcessed: 42}
	if !reflect.DeepEqual(b1, want) {
		t.Fatalf("boundary = %+v, want %+v", b1, want)
	}
	b2, err := c.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b1, b2) || f.prepares != 1 {
		t.Fatalf("second prepare: %+v after %+v, %d real prepares: want the same boundary, 1 prepare", b2, b1, f.prepares)
	}
	st, err := c.Status(ctx)
	if err != nil || st.State != StatePrepared || !reflect.DeepEqual(st.Offsets, b1.Offsets) {
		t.Fatalf("status = %+v, %v; want prepared at the boundary", st, err)
	}

	offs, err := c.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(offs, b1.Offsets) {
		t.Fatalf("resumed from %v, want the boundary %v", offs, b1.Offsets)
	}
	if st, _ := c.Status(ctx); st.State != StateRunning {
		t.Fatalf("after resume: state %s, want running", st.State)
	}

	if _, err := c.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(ctx); err != nil { // a no-op while running
		t.Fatal(err)
	}
	if st, _ := c.Status(ctx); st.State != StateRunning || f.aborts != 1 {
		t.Fatalf("after abort: state %s, %d aborts; want running, 1", st.State, f.aborts)
	}
}

// TestStatusDuringPrepare: status answers while a prepare is under way, and a cancelled
// call returns the context's error.
func TestStatusDuringPrepare(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{})
	c := Dial(serve(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	done := make(chan error, 1)
	go func() { _, err := c.Prepare(ctx); done <- err }()
	time.Sleep(50 * time.Millisecond)
	if st, err := c.Status(ctx); err != nil || st.State != StateRunning {
		t.Fatalf("status during prepare = %+v, %v", st, err)
	}
	close(f.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	f.block = make(chan struct{})
	f.state = StateRunning
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := c.Prepare(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("prepare past its deadline: got %v, want DeadlineExceeded", err)
	}
	close(f.block)
}

// TestOneRequestPerConnection: the server closes the connection after the answer, even if the
// client asks for keep-alive, so that no connection from outside stays open for CRIU to meet.
func TestOneRequestPerConnection(t *testing.T) {
	path := serve(t, newFake())
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("GET", "http://x/v1/status", nil)
	req.Header.Set(HeaderVersion, "1")
	req.Header.Set("Connection", "keep-alive")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the answer: read %d, %v; want the server's close (EOF)", n, err)
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Dial(filepath.Join(t.TempDir(), "none.sock")).Status(ctx); err == nil || !strings.Contains(err.Error(), "dial") {
		t.Errorf("no socket: got %v, want a dial error", err)
	}
	long := "/" + strings.Repeat("x", 120)
	if _, err := Dial(long).Status(ctx); err == nil || !strings.Contains(err.Error(), "longer") {
		t.Errorf("long path: got %v", err)
	}
}

func TestOffsetsJSON(t *testing.T) {
	b, err := json.Marshal(Boundary{Offsets: Offsets{"sensors": {0: 123, 2: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"offsets":{"sensors":{"0":123,"2":7}}`) {
		t.Errorf("boundary JSON %s", b)
	}
}

// TestErrorAnswers checks every error answer of the handler: status, JSON body, Allow and the
// protocol header, as PROTOCOL.md describes them.
func TestErrorAnswers(t *testing.T) {
	h := NewHandler(newFake())
	for _, c := range []struct {
		method, path, version string
		code                  int
		allow                 string
		msg                   []string
	}{
		{"GET", "/v1/prepare", "1", http.StatusMethodNotAllowed, "POST", []string{"/v1/prepare takes POST, not GET"}},
		{"PUT", "/v1/resume", "1", http.StatusMethodNotAllowed, "POST", []string{"/v1/resume takes POST"}},
		{"DELETE", "/v1/abort", "1", http.StatusMethodNotAllowed, "POST", []string{"/v1/abort takes POST"}},
		{"POST", "/v1/status", "1", http.StatusMethodNotAllowed, "GET", []string{"/v1/status takes GET, not POST"}},
		{"POST", "/v2/prepare", "1", http.StatusNotFound, "", []string{"no such call /v2/prepare", "/v1/status"}},
		{"GET", "/", "1", http.StatusNotFound, "", []string{"no such call /"}},
		{"GET", "/v1/status/x", "1", http.StatusNotFound, "", []string{"no such call /v1/status/x"}},
		{"GET", "/v1/status", "", http.StatusBadRequest, "", []string{"missing header " + HeaderVersion, "speaks protocol 1 to 3"}},
		{"POST", "/v1/prepare", "4", http.StatusBadRequest, "", []string{`client speaks Ftwin-Hook-Protocol "4"`, "this server speaks 1 to 3"}},
		{"POST", "/v2/advance", "1", http.StatusBadRequest, "", []string{"/v2/advance is a call of protocol 2"}},
		{"POST", "/v2/release", "2", http.StatusNotImplemented, "", []string{"release", "cannot be migrated by replay"}},
		{"GET", "/v2/shadow", "2", http.StatusMethodNotAllowed, "POST", []string{"/v2/shadow takes POST"}},
		{"GET", "/nowhere", "0", http.StatusBadRequest, "", []string{`"0"`}}, // the version is checked first
	} {
		req := httptest.NewRequest(c.method, c.path, nil)
		if c.version != "" {
			req.Header.Set(HeaderVersion, c.version)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		name := c.method + " " + c.path + " (version " + c.version + ")"
		if rec.Code != c.code {
			t.Errorf("%s: status %d, want %d", name, rec.Code, c.code)
		}
		if got := rec.Header().Get("Allow"); got != c.allow {
			t.Errorf("%s: Allow %q, want %q", name, got, c.allow)
		}
		if got := rec.Header().Get(HeaderVersion); got != "3" {
			t.Errorf("%s: %s %q, want 3", name, HeaderVersion, got)
		}
		if got := rec.Header().Get("Content-Type"); got != "application/json" {
			t.Errorf("%s: Content-Type %q", name, got)
		}
		if got := rec.Header().Get("Connection"); got != "close" {
			t.Errorf("%s: Connection %q, want close", name, got)
		}
		var e errorResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Errorf("%s: body %q is not an error answer: %v", name, rec.Body, err)
		}
		for _, m := range c.msg {
			if !strings.Contains(e.Error, m) {
				t.Errorf("%s: error %q does not say %q", name, e.Error, m)
			}
		}
	}
}

// capFake is a participant that reports version 3 fields, to check that older requests do
// not see them.
type capFake struct{ *fake }

func (f capFake) Prepare(ctx context.Context) (Boundary, error) {
	b, err := f.fake.Prepare(ctx)
	b.Capabilities = []string{CapHold}
	return b, err
}

func (f capFake) Status() Status {
	s := f.fake.Status()
	s.Capabilities, s.OffsetsSource, s.CommitInterval = []string{CapHold}, "local", 5*time.Second
	return s
}

// TestVersion3FieldsOnlyInVersion3 checks that requests of versions 1 and 2 get the answers
// they always got, and version 3 its fields.
func TestVersion3FieldsOnlyInVersion3(t *testing.T) {
	h := NewHandler(capFake{newFake()})
	get := func(method, path, version string) map[string]any {
		req := httptest.NewRequest(method, path, nil)
		req.Header.Set(HeaderVersion, version)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || rec.Code != 200 {
			t.Fatalf("%s %s v%s: %d %s", method, path, version, rec.Code, rec.Body)
		}
		return m
	}
	for _, v := range []string{"1", "2"} {
		b := get("POST", "/v1/prepare", v)
		if _, ok := b["capabilities"]; ok || b["protocol"] != float64(v[0]-'0') {
			t.Errorf("prepare v%s: %v", v, b)
		}
		s := get("GET", "/v1/status", v)
		if _, ok := s["commit_interval_ns"]; ok {
			t.Errorf("status v%s: %v", v, s)
		}
		if _, ok := s["offsets_source"]; ok {
			t.Errorf("status v%s: %v", v, s)
		}
	}
	b := get("POST", "/v1/prepare", "3")
	if caps, _ := b["capabilities"].([]any); len(caps) != 1 || caps[0] != CapHold || b["protocol"] != float64(3) {
		t.Errorf("prepare v3: %v", b)
	}
	s := get("GET", "/v1/status", "3")
	if s["commit_interval_ns"] != float64(5*time.Second) || s["offsets_source"] != "local" {
		t.Errorf("status v3: %v", s)
	}
}

// TestTimeoutHeader: a version 3 request bounds the call by its Ftwin-Hook-Timeout-Ms; an
// older one's header is ignored; a bad value is a 400.
func TestTimeoutHeader(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{})
	defer close(f.block)
	h := NewHandler(f)
	call := func(version, ms string) (int, time.Duration) {
		req := httptest.NewRequest("POST", "/v1/prepare", nil)
		req.Header.Set(HeaderVersion, version)
		req.Header.Set(HeaderTimeout, ms)
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req.WithContext(ctx))
		return rec.Code, time.Since(start)
	}
	if code, took := call("3", "100"); code != http.StatusGatewayTimeout || took > time.Second {
		t.Errorf("v3 with 100 ms: %d after %v, want 504 at once", code, took)
	}
	if code, took := call("2", "100"); took < 1500*time.Millisecond {
		t.Errorf("v2 with the header: %d after %v, want it ignored (the request's own 2 s)", code, took)
	}
	if code, _ := call("3", "soon"); code != http.StatusBadRequest {
		t.Errorf("a bad timeout: %d, want 400", code)
	}
}
