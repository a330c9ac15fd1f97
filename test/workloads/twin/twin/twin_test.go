package twin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/sensors"
	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/twin/twin"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// TestKfake runs the scenarios against kfake in process.
func TestKfake(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run(t, c.ListenAddrs())
}

// TestApache runs the scenarios against a real Apache Kafka broker (KRaft), the proof: kfake's
// transactions are an emulation.
func TestApache(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	home := os.Getenv("FTWIN_KAFKA_HOME")
	if home == "" {
		home = broker.DefaultKafkaHome
	}
	if _, err := os.Stat(filepath.Join(home, "libs")); err != nil {
		t.Skipf("no Apache Kafka in %s: %v", home, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	port := freePortPair(t)
	start := time.Now()
	b, err := broker.StartApache(ctx, broker.ApacheConfig{Home: home, Dir: t.TempDir(), Addr: "127.0.0.1:" + strconv.Itoa(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t.Logf("Apache Kafka ready in %s", time.Since(start).Round(time.Millisecond))
	run(t, []string{b.Addr()})
}

func run(t *testing.T, brokers []string) {
	t.Run("migration", func(t *testing.T) { migration(t, brokers) })
	t.Run("rollback", func(t *testing.T) { rollback(t, brokers) })
}

// freePortPair finds a port p with p+1 free as well (the KRaft controller's).
func freePortPair(t *testing.T) int {
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two consecutive free ports")
	return 0
}

// running is a twin run in process with its hook socket.
type running struct {
	name  string
	tw    *twin.Twin
	conns *conns
	hook  *kafkahooks.Client
	done  chan struct{} // closed when Run returned, with its error in err
	err   error
	stop  context.CancelFunc
}

func startTwin(t *testing.T, brokers []string, cfg twin.Config, logs *logger) *running {
	t.Helper()
	cfg.Brokers = brokers
	cfg.Logf = logs.prefix(cfg.Instance)
	cs := &conns{m: map[net.Conn]bool{}}
	cfg.Dialer = cs.dial
	tw, err := twin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "hook.sock")
	ln, err := kafkahooks.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{name: cfg.Instance, tw: tw, conns: cs, hook: kafkahooks.Dial(sock), done: make(chan struct{}), stop: cancel}
	served := make(chan struct{})
	go func() { kafkahooks.Serve(ctx, tw.Loop(), kafkahooks.WithListener(ln)); close(served) }()
	go func() {
		r.err = tw.Run(ctx)
		cancel()
		<-served
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Errorf("twin %s did not stop", r.name)
		}
	})
	return r
}

// conns dials broker connections and can close them all, as a CRIU restore with tcp-close
// leaves them.
type conns struct {
	mu sync.Mutex
	m  map[net.Conn]bool
}

func (c *conns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	d.SetMultipathTCP(false)
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil {
		c.mu.Lock()
		c.m[conn] = true
		c.mu.Unlock()
	}
	return conn, err
}

func (c *conns) closeAll() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.m)
	for conn := range c.m {
		conn.Close()
	}
	clear(c.m)
	return n
}

// logger collects the twins' logs and prints them if the test fails (or FTWIN_TEST_LOGS is set).
type logger struct {
	mu    sync.Mutex
	lines []string
	start time.Time
}

func (l *logger) prefix(p string) func(string, ...any) {
	return func(format string, args ...any) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, fmt.Sprintf("%8.3fs %s: ", time.Since(l.start).Seconds(), p)+fmt.Sprintf(format, args...))
	}
}

func (l *logger) dump(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		t.Log(s)
	}
}

// waitFor waits until cond holds; it fails when timeout passes first or one of the twins
// stops.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool, twins ...*running) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		for _, r := range twins {
			select {
			case <-r.done:
				t.Fatalf("waiting for %s: twin %s stopped: %v", what, r.name, r.err)
			default:
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// committed returns the group's committed offsets.
func committed(ctx context.Context, t *testing.T, adm *kadm.Client, group string) kafkahooks.Offsets {
	t.Helper()
	resp, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	offs := kafkahooks.Offsets{}
	resp.Each(func(o kadm.OffsetResponse) {
		if offs[o.Topic] == nil {
			offs[o.Topic] = map[int32]int64{}
		}
		offs[o.Topic][o.Partition] = o.At
	})
	return offs
}

func endOffsets(ctx context.Context, t *testing.T, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	m := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { m[o.Partition] = o.Offset })
	return m
}

// checkBoundary asserts what prepare promises: the group's committed offsets are the
// boundary, no transaction is open, and nothing moves while the twin holds.
func checkBoundary(ctx context.Context, t *testing.T, adm *kadm.Client, r *running, group, txnID, out string, b kafkahooks.Boundary) {
	t.Helper()
	if got := committed(ctx, t, adm, group); !reflect.DeepEqual(got, b.Offsets) || len(b.Offsets) == 0 {
		t.Fatalf("committed offsets %v, boundary %v", got, b.Offsets)
	}
	if b.Group != group || b.InstanceID == "" || b.MemberID == "" || !b.Transactional || b.Protocol != kafkahooks.Version || b.Digest == "" {
		t.Errorf("boundary %+v", b)
	}
	txns, err := adm.DescribeTransactions(ctx, txnID)
	if err != nil {
		t.Fatalf("describe transaction %s: %v", txnID, err)
	}
	d, ok := txns[txnID]
	if !ok || d.Err != nil {
		t.Fatalf("transaction %s: %+v", txnID, d)
	}
	switch d.State {
	case "Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence":
		t.Fatalf("transaction %s is %s at the boundary", txnID, d.State)
	}
	hw := endOffsets(ctx, t, adm, out)
	time.Sleep(500 * time.Millisecond)
	if got := endOffsets(ctx, t, adm, out); !reflect.DeepEqual(got, hw) {
		t.Fatalf("output moved while prepared: %v, then %v", hw, got)
	}
	if got := committed(ctx, t, adm, group); !reflect.DeepEqual(got, b.Offsets) {
		t.Fatalf("committed offsets moved while prepared: %v, boundary %v", got, b.Offsets)
	}
	if st, err := r.hook.Status(ctx); err != nil || st.State != kafkahooks.StatePrepared {
		t.Fatalf("status %+v, %v: want prepared", st, err)
	}
	t.Logf("boundary: transaction %s %s (producer %d epoch %d), offsets %v, %d records processed",
		txnID, d.State, d.ProducerID, d.ProducerEpoch, b.Offsets, b.RecordsProcessed)
}

// migration: sensors produce continuously; a twin is prepared and aborted, prepared and
// resumed, then a second copy with the same identities starts while the first goes on (a
// zombie). Its output must never become visible after the new copy initialised, and the
// output must hold every input exactly once.
func migration(t *testing.T, brokers []string) {
	logs := &logger{start: time.Now()}
	defer func() {
		if t.Failed() || os.Getenv("FTWIN_TEST_LOGS") != "" {
			logs.dump(t)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const in, out, group, instanceID = "sensors", "twin-state", "ftwin-twin", "twin-1"
	txnID := twin.TransactionalID(instanceID)
	adm, stopGen, genDone := setup(ctx, t, brokers, in)
	cfg := func(instance string) twin.Config {
		return twin.Config{Group: group, InstanceID: instanceID, In: in, Out: out, StateMiB: 16, Devices: 64,
			Window: 20, Transactional: true, RebuildFromChangelog: true, Changelog: "twin-changelog", Instance: instance}
	}
	a := startTwin(t, brokers, cfg("A"), logs)
	waitFor(t, "A to process 300 records", 30*time.Second, func() bool { return a.tw.Stats().Processed >= 300 }, a)

	// 1. Prepare, hold, abort: the source after a rolled-back migration.
	start := time.Now()
	b1, err := a.hook.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prepare answered in %s", time.Since(start).Round(time.Millisecond))
	checkBoundary(ctx, t, adm, a, group, txnID, out, b1)
	start = time.Now()
	if err := a.hook.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("abort answered in %s", time.Since(start).Round(time.Millisecond))
	waitFor(t, "A to process after the abort", 30*time.Second, func() bool { return a.tw.Stats().Processed > b1.RecordsProcessed+100 }, a)

	// 2. Prepare, resume: what the restored copy does (re-initialise, continue from the boundary).
	b2, err := a.hook.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := a.hook.Prepare(ctx); err != nil || !reflect.DeepEqual(again, b2) {
		t.Fatalf("second prepare: %+v, %v; want %+v", again, err, b2)
	}
	checkBoundary(ctx, t, adm, a, group, txnID, out, b2)
	// As CRIU restores it (tcp-close), the copy finds its Kafka connections closed.
	t.Logf("closed %d connections of A", a.conns.closeAll())
	start = time.Now()
	resumeAt := start
	offs, err := a.hook.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resume answered in %s, fetching from %v", time.Since(start).Round(time.Millisecond), offs)
	if !reflect.DeepEqual(offs, b2.Offsets) {
		t.Fatalf("resumed from %v, boundary %v", offs, b2.Offsets)
	}
	waitFor(t, "A to process after the resume", 30*time.Second, func() bool { return a.tw.Stats().Processed > b2.RecordsProcessed+100 }, a)

	// 3. A zombie: a copy with the same instance and transactional ids starts while A runs.
	bStart := time.Now()
	b := startTwin(t, brokers, cfg("B"), logs)
	var aErr error
	select {
	case <-a.done:
		aErr = a.err
	case <-time.After(60 * time.Second):
		t.Fatal("the zombie A still runs 60s after B started")
	}
	fenced := time.Since(bStart)
	if aErr == nil {
		t.Fatal("the zombie A stopped without an error")
	}
	if !errors.Is(aErr, kerr.ProducerFenced) && !errors.Is(aErr, kerr.InvalidProducerEpoch) && !errors.Is(aErr, kerr.FencedInstanceID) {
		t.Logf("A stopped with an error that is not a known fencing error: %v", aErr)
	}
	waitFor(t, "B to initialise", 30*time.Second, func() bool { return !b.tw.Loop().InitializedAt().IsZero() }, b)
	bInit := b.tw.Loop().InitializedAt()
	t.Logf("B initialised %s after its start; A stopped %s after B's start: %v", bInit.Sub(bStart).Round(time.Millisecond), fenced.Round(time.Millisecond), aErr)
	waitFor(t, "B to process", 30*time.Second, func() bool { return b.tw.Stats().Processed > 200 }, b)
	if st := b.tw.Stats(); st.RebuiltRecords == 0 {
		t.Errorf("B rebuilt no device from the changelog: %+v", st)
	}

	// Drain: stop the sensors, let B catch up, stop B, check the output.
	res := drain(ctx, t, adm, stopGen, genDone, in, group, b)
	checkOutput(ctx, t, brokers, out, res)

	// No output of the zombie processed after B initialised is visible.
	noLateOutput(ctx, t, brokers, out, "A", bInit)
	first := firstOutputAfter(ctx, t, brokers, out, resumeAt)
	t.Logf("first output %s after the resume call", first.Sub(resumeAt).Round(time.Millisecond))
}

// firstOutputAfter returns when the first output processed after t0 was processed.
func firstOutputAfter(ctx context.Context, t *testing.T, brokers []string, out string, t0 time.Time) time.Time {
	t.Helper()
	rd, err := verify.NewReader(brokers)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var first int64
	err = verify.ReadTopic(ctx, rd, out, func(r *kgo.Record) {
		var o verify.Event
		if json.Unmarshal(r.Value, &o) == nil && o.ProcessedNS > t0.UnixNano() && (first == 0 || o.ProcessedNS < first) {
			first = o.ProcessedNS
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(0, first)
}

// rollback: the migration of A rolls back after the target B initialised and processed; A's
// abort re-initialises it, which fences B. Whichever copy was told to run last wins.
func rollback(t *testing.T, brokers []string) {
	logs := &logger{start: time.Now()}
	defer func() {
		if t.Failed() || os.Getenv("FTWIN_TEST_LOGS") != "" {
			logs.dump(t)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const in, out, group, instanceID = "sensors-rb", "twin-state-rb", "ftwin-twin-rb", "twin-rb"
	adm, stopGen, genDone := setup(ctx, t, brokers, in)
	cfg := func(instance string) twin.Config {
		return twin.Config{Group: group, InstanceID: instanceID, In: in, Out: out, StateMiB: 16, Devices: 64,
			Window: 20, Transactional: true, Instance: instance}
	}
	a := startTwin(t, brokers, cfg("A"), logs)
	waitFor(t, "A to process 200 records", 30*time.Second, func() bool { return a.tw.Stats().Processed >= 200 }, a)
	bnd, err := a.hook.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The target, B, starts (as a restored copy that resumed would) and processes.
	b := startTwin(t, brokers, cfg("B"), logs)
	waitFor(t, "B to process 100 records", 30*time.Second, func() bool { return b.tw.Stats().Processed >= 100 }, a, b)
	// The migration rolls back anyway: A is told to carry on.
	start := time.Now()
	if err := a.hook.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("abort answered in %s", time.Since(start).Round(time.Millisecond))
	aInit := a.tw.Loop().InitializedAt()
	if st, err := a.hook.Status(ctx); err != nil || st.State != kafkahooks.StateRunning || reflect.DeepEqual(st.Offsets, bnd.Offsets) {
		t.Fatalf("after the abort: %+v, %v; want running, past the boundary %v (B committed meanwhile)", st, err, bnd.Offsets)
	}
	select {
	case <-b.done:
		t.Logf("B stopped %s after the abort: %v", time.Since(start).Round(time.Millisecond), b.err)
		if b.err == nil {
			t.Fatal("B stopped without an error")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("B still runs 60s after A's abort")
	}
	waitFor(t, "A to process after the abort", 30*time.Second, func() bool { return a.tw.Stats().Processed > bnd.RecordsProcessed+100 }, a)
	res := drain(ctx, t, adm, stopGen, genDone, in, group, a)
	checkOutput(ctx, t, brokers, out, res)
	noLateOutput(ctx, t, brokers, out, "B", aInit)
}

// setup starts the sensors producing to topic in.
func setup(ctx context.Context, t *testing.T, brokers []string, in string) (*kadm.Client, context.CancelFunc, chan sensors.Result) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	genCtx, stopGen := context.WithCancel(ctx)
	t.Cleanup(stopGen)
	genDone := make(chan sensors.Result, 1)
	go func() {
		res, err := sensors.Run(genCtx, sensors.Config{Brokers: brokers, Topic: in, Partitions: 3, Devices: 20, Rate: 400})
		if err != nil {
			t.Errorf("sensors: %v", err)
		}
		genDone <- res
	}()
	return kadm.NewClient(cl), stopGen, genDone
}

// drain stops the sensors, waits until the group committed the whole input and stops r.
func drain(ctx context.Context, t *testing.T, adm *kadm.Client, stopGen context.CancelFunc, genDone chan sensors.Result, in, group string, r *running) sensors.Result {
	t.Helper()
	stopGen()
	res := <-genDone
	waitFor(t, r.name+" to commit the whole input", 60*time.Second, func() bool {
		ends := endOffsets(ctx, t, adm, in)
		got := committed(ctx, t, adm, group)[in]
		for p, e := range ends {
			if got[p] != e {
				return false
			}
		}
		return true
	}, r)
	r.stop()
	<-r.done
	if r.err != nil {
		t.Fatalf("%s: %v", r.name, r.err)
	}
	return res
}

// checkOutput asserts the output holds every input exactly once.
func checkOutput(ctx context.Context, t *testing.T, brokers []string, out string, res sensors.Result) {
	t.Helper()
	rep, err := verify.Output(ctx, brokers, out, verify.ExpectMaxSeq(res.MaxSeq))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(struct {
		EventsOut, Expected, Lost, Duplicated, OutOfOrder int64
		StreamGap                                         time.Duration
		Instances                                         map[string]int64
	}{rep.EventsOut, rep.Expected, rep.Lost, rep.Duplicated, rep.OutOfOrder, rep.StreamGap, rep.Instances})
	t.Logf("produced %d; verify: %s", res.Produced, js)
	if !rep.OK() || rep.EventsOut != res.Produced || rep.Expected != res.Produced {
		t.Fatalf("output is not exactly the input: %s; %v", js, rep.Worst(5))
	}
}

// noLateOutput asserts that no output of instance processed at or after since is visible.
func noLateOutput(ctx context.Context, t *testing.T, brokers []string, out, instance string, since time.Time) {
	t.Helper()
	rd, err := verify.NewReader(brokers)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var late, last int64
	err = verify.ReadTopic(ctx, rd, out, func(r *kgo.Record) {
		var o verify.Event
		if json.Unmarshal(r.Value, &o) == nil && o.Instance == instance {
			last = max(last, o.ProcessedNS)
			if o.ProcessedNS >= since.UnixNano() {
				late++
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s's last visible output was processed %s before the other copy initialised", instance, since.Sub(time.Unix(0, last)).Round(time.Millisecond))
	if late > 0 {
		t.Fatalf("%d outputs of the fenced %s processed after the other copy initialised are visible", late, instance)
	}
}
