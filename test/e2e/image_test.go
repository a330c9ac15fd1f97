package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/ociimage"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
)

// kcatTCPModes are the TCP modes the dynamically linked consumer moves under: --tcp close
// (on its host's network; librdkafka reconnects to the broker from the target), which works
// between hosts of any network, and --tcp established (with an address of its own that moves
// with it: its broker connection carries on, no reconnect).
var kcatTCPModes = []restore.TCPMode{restore.TCPClose, restore.TCPEstablished}

// TestImageKcatMigrates: a dynamically linked Kafka consumer — Debian's kcat on librdkafka,
// packaged with its shared libraries into an OCI image archive by ociimage — runs on a lab host
// from that archive and is moved cloud→fog→cloud mid-stream by stop-and-copy, with no hook.
// Every record produced is consumed exactly once across the three hosts' logs: the restored
// process carries on from its in-memory position (a restart would read from the beginning
// again; a lost record would leave a gap). With an address of its own (--tcp established) its
// broker connections are the same ones after each move and it never sees them drop.
func TestImageKcatMigrates(t *testing.T) {
	requireLabTools(t)
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat not installed (`make install` installs it): %v", err)
	}
	archive := kcatArchive(t, kcat)
	n := 0
	for _, kind := range brokerKinds(t) {
		for _, tcp := range kcatTCPModes {
			subnet := fmt.Sprintf("10.240.%d.0/24", 51+n) // 10.240.51-59: this test's
			n++
			t.Run(string(kind)+"/"+string(tcp), func(t *testing.T) { testKcatMigrates(t, archive, tcp, kind, subnet) })
		}
	}
}

// kcatArchive writes an OCI image archive holding kcat and the libraries ldd lists for it.
func kcatArchive(t *testing.T, kcat string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"tmp", "etc", "dev", "proc", "sys"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entry, err := ociimage.AddExecutable(context.Background(), root, kcat)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ldd", kcat).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "librdkafka") {
		t.Fatalf("kcat is not dynamically linked against librdkafka (%v):\n%s", err, out)
	}
	path := filepath.Join(t.TempDir(), "kcat.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ociimage.WriteArchive(context.Background(), f, "ftwin.local/test/kcat:1", root, ociimage.WithEntrypoint(entry)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func testKcatMigrates(t *testing.T, archive string, tcp restore.TCPMode, kind broker.Kind, subnet string) {

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var b [3]byte
	_, _ = rand.Read(b[:])
	base := t.TempDir()
	l, err := lab.Up(ctx, lab.Config{Name: "i" + hex.EncodeToString(b[:]), BaseDir: base, Subnet: subnet, Broker: kind})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	agents := map[string]*lab.RunningAgent{}
	t.Cleanup(func() {
		for _, a := range agents {
			_ = a.Close()
		}
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
		if left := lab.Find(base, l.Name); !left.Empty() {
			t.Errorf("lab down left %s", left)
		}
	})
	pkiDir := t.TempDir()
	var hosts []pki.Host
	for _, h := range l.Hosts {
		hosts = append(hosts, pki.Host{Name: h.Name, IPs: []net.IP{net.ParseIP(h.IP)}})
	}
	if err := pki.Init(pkiDir, hosts); err != nil {
		t.Fatal(err)
	}
	const id = "kcat"
	w := lab.Workload{ID: id, ImageArchive: archive}
	for _, h := range l.Hosts {
		a, err := h.StartAgent(ctx, pkiDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		agents[h.Name] = a
		if _, err := h.ImportImage(ctx, w); err != nil { // as from a registry, on every host
			t.Fatal(err)
		}
	}

	const topic = "readings"
	cl, err := kgo.NewClient(kgo.SeedBrokers(l.BrokerAddr), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	// The producer writes about 250 records/s from before the first move until after the last.
	var produced atomic.Int64
	producerDone, stopProducing := make(chan error, 1), make(chan struct{})
	go func() {
		tick := time.NewTicker(4 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				producerDone <- ctx.Err()
				return
			case <-stopProducing:
				producerDone <- nil
				return
			case <-tick.C:
			}
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: fmt.Appendf(nil, "r-%06d", i)}).FirstErr(); err != nil {
				producerDone <- fmt.Errorf("produce record %d: %w", i, err)
				return
			}
			produced.Add(1)
		}
	}()

	cloud, fog := l.Hosts[0], l.Hosts[1]
	ownAddress := tcp == restore.TCPEstablished
	w.OwnAddress = ownAddress
	// -E: carry on after the broker connection drops (a restore with --tcp close closes it;
	// without -E kcat exits when all its broker connections are down).
	w.Args = []string{"-b", l.BrokerAddr, "-E", "-C", "-t", topic, "-p", "0", "-o", "beginning", "-u", "-q", "-f", `%o %s\n`}
	if err := cloud.Run(ctx, w); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return len(consumed(t, []segment{{cloud.LogPath(id), 0, -1}}).offsets) >= 200 }, "kcat consumes on cloud")
	var conns []string
	if ownAddress {
		if conns, err = cloud.ContainerConnections(ctx, id); err != nil || len(conns) == 0 {
			t.Fatalf("kcat's connections on cloud: %v, %v", conns, err)
		}
		t.Logf("kcat's broker connections: %v", conns)
	}

	// The consumer's output is one stream over the moves: cloud's log up to the first move
	// (the source is frozen there, then removed), fog's, and what cloud's log grows by after
	// the second (its restored copy appends). A line may be split at a move: kcat writes a
	// record's fields one by one.
	var segments []segment
	for _, hop := range [][2]*lab.Host{{cloud, fog}, {fog, cloud}} {
		from, to := hop[0], hop[1]
		before := produced.Load()
		rep := moveImage(ctx, t, pkiDir, agents, from, to, id, tcp)
		if ownAddress {
			after, err := to.ContainerConnections(ctx, id)
			if err != nil || strings.Join(after, " ") != strings.Join(conns, " ") {
				t.Errorf("kcat's connections on %s after the move: %v (%v); want the same as before, %v", to.Name, after, err, conns)
			}
		}
		t.Logf("%s→%s mid-stream (%d produced at the start): %s, downtime %v, %d bytes sent", from.Name, to.Name, before, rep.Result, rep.Downtime, rep.Transfer.BytesSent)
		if produced.Load() <= before {
			t.Fatalf("nothing was produced during the move %s→%s: not mid-stream", from.Name, to.Name)
		}
		if client, err := from.Client(); err == nil {
			if _, err := client.LoadContainer(lab.Context(ctx), id); err == nil {
				t.Errorf("the source container is still on %s after a committed move", from.Name)
			}
			client.Close()
		}
		end := fileSize(t, from.LogPath(id))
		if len(segments) == 0 {
			segments = append(segments, segment{from.LogPath(id), 0, end})
		} else {
			segments[len(segments)-1].end = end
		}
		segments = append(segments, segment{to.LogPath(id), 0, -1})
		if to == cloud { // what the first copy wrote before its move
			segments[len(segments)-1].start = segments[0].end
		}
		// The restored copy consumes on the target (its segment starts at the restore).
		if !within(30*time.Second, func() bool { return len(consumed(t, segments[len(segments)-1:]).offsets) >= 100 }) {
			data, _ := os.ReadFile(to.LogPath(id))
			t.Fatalf("the consumer restored on %s consumed %d records in 30s after its move, want 100; its log ends:\n%s",
				to.Name, len(consumed(t, segments[len(segments)-1:]).offsets), data[max(0, len(data)-600):])
		}
	}
	// 200 more records after the last move, then the producer stops.
	for end := produced.Load() + 200; produced.Load() < end; {
		select {
		case err := <-producerDone:
			t.Fatalf("the producer stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	close(stopProducing)
	if err := <-producerDone; err != nil {
		t.Fatal(err)
	}
	total := int(produced.Load())
	// Everything produced is consumed exactly once, in order.
	var out kcatOutput
	deadline := time.Now().Add(30 * time.Second)
	for out = consumed(t, segments); len(out.offsets) < total; out = consumed(t, segments) {
		if time.Now().After(deadline) {
			last := int64(-1)
			if len(out.offsets) > 0 {
				last = out.offsets[len(out.offsets)-1]
			}
			var tails []string
			for _, sg := range segments {
				data, _ := os.ReadFile(sg.path)
				tails = append(tails, fmt.Sprintf("%s (%d bytes) ends:\n%s", sg.path, len(data), data[max(0, len(data)-300):]))
			}
			t.Fatalf("%d of %d records consumed after 30s (the last: offset %d); kcat's other output %q; segments %v\n%s",
				len(out.offsets), total, last, out.other, segments, strings.Join(tails, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, o := range out.offsets {
		if o != int64(i) || out.values[i] != fmt.Sprintf("r-%06d", i) {
			t.Fatalf("consumed record %d is offset %d %q: a record lost or duplicated around a move (%d consumed; output %v)", i, o, out.values[i], len(out.offsets), segments)
		}
	}
	if len(out.offsets) != total {
		t.Fatalf("consumed %d records, produced %d", len(out.offsets), total)
	}
	t.Logf("%d produced, %d consumed exactly once and in order over the moves; kcat's other output (its reconnects): %d lines %q", total, len(out.offsets), len(out.other), first(out.other, 4))
	if ownAddress && len(out.other) > 0 {
		t.Errorf("with its connections kept, kcat still saw %q", out.other)
	}
}

// segment is the part [start, end) of a log file (end -1: to its end).
type segment struct {
	path       string
	start, end int64
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if os.IsNotExist(err) {
		return 0
	} else if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

type kcatOutput struct {
	offsets       []int64
	values, other []string
}

var kcatError = regexp.MustCompile(`% (ERROR|FATAL): [^\n]*\n`)

// consumed reads kcat's "OFFSET VALUE" lines from the segments joined, and its other lines.
func consumed(t *testing.T, segs []segment) kcatOutput {
	t.Helper()
	var stream []byte
	for _, sg := range segs {
		data, err := os.ReadFile(sg.path)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		end := int64(len(data))
		if sg.end >= 0 && sg.end < end {
			end = sg.end
		}
		if sg.start < end {
			stream = append(stream, data[sg.start:end]...)
		}
	}
	var out kcatOutput
	// kcat's errors go to stderr, which shares the log with stdout: a whole line written
	// between two fields of a record (kcat writes them one by one). Take them out first.
	stream = kcatError.ReplaceAllFunc(stream, func(line []byte) []byte {
		out.other = append(out.other, strings.TrimSpace(string(line)))
		return nil
	})
	for _, line := range strings.Split(string(stream), "\n") {
		o, v, ok := strings.Cut(line, " ")
		n, err := strconv.ParseInt(o, 10, 64)
		if !ok || err != nil || !strings.HasPrefix(v, "r-") {
			if strings.TrimSpace(line) != "" {
				out.other = append(out.other, line)
			}
			continue
		}
		out.offsets, out.values = append(out.offsets, n), append(out.values, v)
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	if !within(d, ok) {
		t.Fatalf("%s: not within %v", what, d)
	}
}

// within polls ok until it holds (true) or d has passed (false).
func within(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// moveImage migrates container id by stop-and-copy (no hook, no probe) and requires a commit.
func moveImage(ctx context.Context, t *testing.T, pkiDir string, agents map[string]*lab.RunningAgent, from, to *lab.Host, id string, tcp restore.TCPMode) *migrate.Report {
	t.Helper()
	var network migrate.SourceNetwork
	if tcp == restore.TCPEstablished {
		network = from.Network() // the container's own address moves with it
	}
	tlsCfg, err := pki.ClientConfig(pkiDir, from.Name, to.Name)
	if err != nil {
		t.Fatal(err)
	}
	client, err := from.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rep, err := migrate.Migrate(ctx, client, migrate.Options{
		Namespace: lab.Namespace, Container: id, Target: agents[to.Name].Addr, TLS: tlsCfg,
		SourceHost: from.Name, TCP: tcp, Network: network, PhaseTimeout: time.Minute,
		// The migrator runs on the source host: it reaches the agent from there.
		AgentOpts: []agent.ClientOpt{agent.WithDialer(from.DialContext)},
	})
	if err != nil {
		t.Fatalf("migrate %s→%s: %v", from.Name, to.Name, err)
	}
	if rep.Result != migrate.Committed && rep.Result != migrate.CommittedUnverified {
		t.Fatalf("migrate %s→%s: %s", from.Name, to.Name, rep.Result)
	}
	return rep
}
