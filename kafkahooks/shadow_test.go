package kafkahooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// counts is a deterministic state: per key, the sum of the values applied.
type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) apply(b *Batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range b.Records {
		v, _ := strconv.Atoi(string(r.Value))
		c.m[string(r.Key)] += v
		b.Produce(&kgo.Record{Topic: "out", Key: r.Key, Value: r.Value})
	}
}

func (c *counts) digest() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%d;", k, c.m[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (c *counts) clone() *counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for k, v := range c.m {
		m[k] = v
	}
	return &counts{m: m}
}

// restoredCopy stands in for a copy restored from a dump of src taken at boundary b: same
// state, prepared at b, holding a group client whose gate is closed and whose every dial is
// counted (a restored copy's connections are closed; it must open none).
func restoredCopy(t *testing.T, cfg LoopConfig, src *Loop, b Boundary, dials *atomic.Int64) *Loop {
	t.Helper()
	cp, err := NewLoop(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := newGate()
	g.close()
	counted := func(ctx context.Context, network, host string) (net.Conn, error) {
		dials.Add(1)
		return cfg.Dialer(ctx, network, host)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.Dialer(g.dialer(counted)),
		kgo.ConsumerGroup(cfg.Group), kgo.InstanceID(cfg.InstanceID), kgo.ConsumeTopics(cfg.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	assigned := map[string][]int32{}
	for k, v := range src.assigned {
		assigned[k] = slices.Clone(v)
	}
	src.mu.Unlock()
	cp.cl, cp.gate, cp.assigned, cp.state, cp.boundary = cl, g, assigned, StatePrepared, &b
	return cp
}

// TestReplayMigration runs the replay protocol on two Loops over kfake: the source carries on
// after its snapshot, the shadow catches up without a word of its old client to the broker
// and without touching the group, the digests agree at the cutover, the takeover fences the
// source, and every input reaches the output exactly once.
func TestReplayMigration(t *testing.T) {
	_, brokers, prod := inOutCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadm.NewClient(prod)
	n := 0
	produce := func(k int) {
		t.Helper()
		for range k {
			n++
			r := &kgo.Record{Key: []byte("k" + strconv.Itoa(n%7)), Value: []byte(strconv.Itoa(n))}
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	logf := func(who string) func(string, ...any) {
		return func(f string, a ...any) { t.Logf(time.Now().Format("15:04:05.000 ")+who+" "+f, a...) }
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	cfg := func(st *counts, who string) LoopConfig {
		return LoopConfig{
			Brokers: brokers, Group: "g", Topics: []string{"in"}, InstanceID: "i-1", TransactionalID: "txn-1",
			Dialer: d.DialContext, Handle: func(_ context.Context, b *Batch) error { st.apply(b); return nil },
			Digest: st.digest, Logf: logf(who),
		}
	}
	srcState := &counts{m: map[string]int{}}
	src, err := NewLoop(cfg(srcState, "source"))
	if err != nil {
		t.Fatal(err)
	}
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(ctx) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	member := func() string {
		t.Helper()
		gs, err := adm.DescribeGroups(ctx, "g")
		if err != nil || gs["g"].Err != nil {
			t.Fatalf("describe group: %v %v", err, gs["g"].Err)
		}
		var ids []string
		for _, m := range gs["g"].Members {
			ids = append(ids, m.MemberID)
		}
		return fmt.Sprint(ids)
	}

	produce(40)
	waitFor("the source to process 40", func() bool { return src.Stats().Processed == 40 })
	if st := src.Status(); !st.Can(CapReplay) {
		t.Fatalf("status %+v lacks capability %q", st, CapReplay)
	}
	b0, err := src.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b0.Digest != srcState.digest() {
		t.Fatalf("boundary digest %q, state %q", b0.Digest, srcState.digest())
	}
	var dials atomic.Int64
	cpState := srcState.clone() // the dump
	cp := restoredCopy(t, cfg(cpState, "copy"), src, b0, &dials)
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Run(ctx) }()
	if _, err := src.Release(ctx); err != nil {
		t.Fatal(err)
	}
	before := member()

	from, err := cp.Shadow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !from.Equal(b0.Offsets) {
		t.Fatalf("shadow replays from %v, boundary %v", from, b0.Offsets)
	}
	produce(60) // processed by the source, replayed by the shadow
	waitFor("the source to process 100", func() bool { return src.Stats().Processed == 100 })
	waitFor("the shadow to catch up", func() bool {
		st := cp.Status()
		return st.State == StateShadow && st.Lag == 0 && st.Limit.Len() == 2 && st.Replayed == 60
	})
	if got := member(); got != before {
		t.Fatalf("the group's members changed during the catch-up: %s, then %s", before, got)
	}
	if src.Stats().Aborts != 0 {
		t.Fatalf("the source aborted %d batches during the catch-up", src.Stats().Aborts)
	}

	b, err := src.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	produce(10) // after the boundary: for the copy once it took over
	a, err := cp.Advance(ctx, b.Offsets)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest || !a.Offsets.Equal(b.Offsets) {
		t.Fatalf("advance: %+v, source boundary %+v", a, b)
	}
	if _, err := cp.Advance(ctx, b0.Offsets); err == nil {
		t.Fatal("advance backwards succeeded")
	}
	offs, err := cp.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !offs.Equal(b.Offsets) {
		t.Fatalf("took over at %v, boundary %v", offs, b.Offsets)
	}
	produce(20)
	waitFor("the copy to process the 30 after the boundary", func() bool { return cp.Stats().Processed == 30 })
	if got := dials.Load(); got != 0 {
		t.Fatalf("the copy's old client dialled %d times", got)
	}
	if got := member(); got == before {
		t.Fatalf("the group's member is still the source's %s after the takeover", got)
	}
	// The source, fenced, cannot commit any more: releasing it fails its next batch.
	if _, err := src.Release(ctx); err != nil {
		t.Fatal(err)
	}
	produce(1)
	select {
	case err := <-srcDone:
		if err == nil {
			t.Fatal("the fenced source stopped without an error")
		}
		t.Logf("source stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the fenced source still runs")
	}
	waitFor("the copy to process the last", func() bool { return cp.Stats().Processed == 31 })
	if got := countOutputs(ctx, t, brokers, "out"); got != n {
		t.Fatalf("%d outputs for %d inputs", got, n)
	}
	cancel()
	<-cpDone
}

// TestShadowRefusals: the calls a state does not allow are refused with ErrState.
func TestShadowRefusals(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := &counts{m: map[string]int{}}
	l, err := NewLoop(LoopConfig{Brokers: c.ListenAddrs(), Group: "g", Topics: []string{"in"}, InstanceID: "i",
		Handle: func(_ context.Context, b *Batch) error { st.apply(b); return nil }, Digest: st.digest})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.Run(ctx) }()
	for l.InitializedAt().IsZero() {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := l.Shadow(ctx); !errorsIs(err, ErrState) {
		t.Fatalf("shadow while running: %v, want ErrState", err)
	}
	if _, err := l.Advance(ctx, Offsets{"in": {0: 1}}); !errorsIs(err, ErrState) {
		t.Fatalf("advance while running: %v, want ErrState", err)
	}
	if _, err := l.Release(ctx); err != nil {
		t.Fatalf("release while running: %v, want a no-op", err)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// handlerTransport sends requests to an http.Handler in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// TestClientAndVersion1Server: against an application of protocol 1, the calls of version 1
// work (said again in version 1), and the replay calls fail with ErrNoReplay naming the
// version; a version 1 client gets version 1 answers from this server.
func TestClientAndVersion1Server(t *testing.T) {
	v1 := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderVersion, "1")
		if r.Header.Get(HeaderVersion) != "1" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("protocol mismatch: the client speaks %s %q, this server speaks 1", HeaderVersion, r.Header.Get(HeaderVersion)))
			return
		}
		switch r.URL.Path {
		case "/v1/prepare":
			writeJSON(w, http.StatusOK, Boundary{Protocol: 1, Group: "g", Offsets: Offsets{"in": {0: 3}}})
		case "/v1/status":
			writeJSON(w, http.StatusOK, Status{Protocol: 1, State: StateRunning})
		default:
			writeError(w, http.StatusNotFound, "no such call "+r.URL.Path)
		}
	})
	ctx := context.Background()
	c := NewClient(handlerTransport{v1}, "v1 app")
	b, err := c.Prepare(ctx)
	if err != nil || b.Group != "g" || b.Digest != "" {
		t.Fatalf("prepare against protocol 1: %+v, %v", b, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Protocol != 1 || st.Can(CapReplay) {
		t.Fatalf("status against protocol 1: %+v, %v", st, err)
	}
	if _, err := c.Shadow(ctx); !errors.Is(err, ErrNoReplay) || !strings.Contains(err.Error(), "speaks hook protocol 1") {
		t.Fatalf("shadow against protocol 1: %v, want ErrNoReplay naming the version", err)
	}

	// An old migrator (version 1 requests) and this server: answers in version 1.
	h := NewHandler(newFake())
	req := httptest.NewRequest("POST", "/v1/prepare", nil)
	req.Header.Set(HeaderVersion, "1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var got Boundary
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != 200 || got.Protocol != 1 {
		t.Fatalf("prepare in version 1: %d %s", rec.Code, rec.Body)
	}
}
