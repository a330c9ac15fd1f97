package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// CgroupRoot is where the cgroup hierarchies are mounted.
const CgroupRoot = "/sys/fs/cgroup"

// MeasureConfig configures a Measurer.
type MeasureConfig struct {
	// Window is what the latency p99 covers. Default 10s.
	Window time.Duration
	// HostCores is the CPU each simulated host has, in cores (hosts share the machine's): a
	// host's CPU signal is its processes' CPU time over this. Default 1.
	HostCores float64
	// HostMemMiB is each host's memory for the memory signal. Default 4096.
	HostMemMiB float64
	// CPUWindow is what the CPU figures average over (CPU time used in the last CPUWindow):
	// one second of a busy loop on a loaded machine says little. Default 5s.
	CPUWindow time.Duration
}

// Measurer measures the signals the policy reads, per twin and per host of a fleet:
//
//   - a twin's event latency: from its sensor's timestamp to its output becoming visible to a
//     read_committed reader (the Measurer tails every output topic), p99 over Window;
//   - a twin's consumer lag (kadm: its group's committed offsets against the log end);
//   - a twin's and a host's CPU and memory: the cgroup v1 figures (cpuacct.usage,
//     memory.usage_in_bytes) of the host's cgroup parent (lab.Host.CgroupParent: its
//     containers, restored copies and any load put there);
//   - pressure: PSI where the cgroup offers cpu.pressure (cgroup v2); on cgroup v1 there is no
//     per-cgroup PSI, and PSICPU is -1 (the machine-wide /proc/pressure/cpu says nothing of
//     one simulated host);
//   - a host's uplink throughput: the byte counters of its link (lab.Host.Veth).
type Measurer struct {
	f   *Fleet
	cfg MeasureConfig
	adm *kadm.Client
	cl  *kgo.Client
	tl  *kgo.Client

	mu      sync.Mutex
	twins   map[string]placestate.Twin
	byTopic map[string]string
	lat     map[string][]latPoint // twin → recent outputs
	rate    map[string]int64      // twin → outputs seen since the last sample

	last   time.Time
	cpu    map[string][]cpuPoint // cgroup path → cpuacct.usage over the last CPUWindow
	net    map[string]int64      // host → link bytes at last
	cancel context.CancelFunc
	done   chan struct{}
}

type cpuPoint struct {
	at    time.Time
	usage int64
}

type latPoint struct {
	at  time.Time
	lat time.Duration
}

// NewMeasurer starts measuring the twins (tailing their outputs from now on). Close it.
func (f *Fleet) NewMeasurer(twins map[string]placestate.Twin, cfg MeasureConfig) (*Measurer, error) {
	if cfg.Window == 0 {
		cfg.Window = 10 * time.Second
	}
	if cfg.HostCores == 0 {
		cfg.HostCores = 1
	}
	if cfg.HostMemMiB == 0 {
		cfg.HostMemMiB = 4096
	}
	if cfg.CPUWindow == 0 {
		cfg.CPUWindow = 5 * time.Second
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.Brokers...))
	if err != nil {
		return nil, err
	}
	m := &Measurer{f: f, cfg: cfg, cl: cl, adm: kadm.NewClient(cl), twins: map[string]placestate.Twin{}, byTopic: map[string]string{},
		lat: map[string][]latPoint{}, rate: map[string]int64{}, cpu: map[string][]cpuPoint{}, net: map[string]int64{}, done: make(chan struct{})}
	var topics []string
	for id, t := range twins {
		m.twins[id] = t
		if t.Output != "" {
			m.byTopic[t.Output] = id
			topics = append(topics, t.Output)
		}
	}
	sort.Strings(topics)
	m.tl, err = kgo.NewClient(kgo.SeedBrokers(f.Brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		cl.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.tail(ctx)
	return m, nil
}

// Close stops measuring.
func (m *Measurer) Close() {
	m.cancel()
	<-m.done
	m.tl.Close()
	m.cl.Close()
}

func (m *Measurer) tail(ctx context.Context) {
	defer close(m.done)
	for ctx.Err() == nil {
		fs := m.tl.PollFetches(ctx)
		now := time.Now()
		m.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			id, ok := m.byTopic[r.Topic]
			if !ok {
				return
			}
			var e verify.Event
			if json.Unmarshal(r.Value, &e) != nil || e.SensorNS == 0 {
				return
			}
			m.lat[id] = append(m.lat[id], latPoint{now, now.Sub(time.Unix(0, e.SensorNS))})
			m.rate[id]++
		})
		cut := now.Add(-m.cfg.Window)
		for id, ps := range m.lat {
			i := sort.Search(len(ps), func(i int) bool { return ps[i].at.After(cut) })
			m.lat[id] = ps[i:]
		}
		m.mu.Unlock()
	}
}

// p99 of a twin's recent latencies (0 with no output in the window: a stalled twin shows in
// its lag).
func (m *Measurer) p99(id string, now time.Time) float64 {
	ps := m.lat[id]
	if len(ps) == 0 {
		return 0
	}
	ls := make([]time.Duration, len(ps))
	for i, p := range ps {
		ls[i] = p.lat
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
	return float64(ls[min(len(ls)-1, len(ls)*99/100)].Microseconds()) / 1000
}

// Sample measures every twin and host now. Where is where each twin runs (Fleet.Locate).
func (m *Measurer) Sample(ctx context.Context, where map[string]string) (placement.Sample, error) {
	now := time.Now()
	s := placement.Sample{Time: now, Twins: map[string]placement.TwinSample{}, Hosts: map[string]placement.HostSignals{}}
	dt := now.Sub(m.last).Seconds()
	first := m.last.IsZero()
	m.last = now
	cpuFrac := func(path string) float64 {
		u, err := readInt(filepath.Join(CgroupRoot, "cpuacct", path, "cpuacct.usage"))
		if err != nil {
			delete(m.cpu, path)
			return 0
		}
		ps := m.cpu[path]
		if n := len(ps); n > 0 && u < ps[n-1].usage {
			ps = nil // the cgroup was made anew
		}
		ps = append(ps, cpuPoint{now, u})
		for len(ps) > 2 && now.Sub(ps[1].at) >= m.cfg.CPUWindow {
			ps = ps[1:]
		}
		m.cpu[path] = ps
		if len(ps) < 2 {
			return 0
		}
		d := now.Sub(ps[0].at).Seconds()
		return float64(u-ps[0].usage) / 1e9 / d / m.cfg.HostCores
	}
	memFrac := func(path string) (float64, float64) {
		b, err := readInt(filepath.Join(CgroupRoot, "memory", path, "memory.usage_in_bytes"))
		if err != nil {
			return 0, 0
		}
		mib := float64(b) / (1 << 20)
		return mib / m.cfg.HostMemMiB, mib
	}
	for _, h := range m.f.Lab.Hosts {
		mem, _ := memFrac(h.CgroupParent())
		hs := placement.HostSignals{CPU: cpuFrac(h.CgroupParent()), Mem: mem, PSICPU: psi(h.CgroupParent())}
		if rx, err := readInt(filepath.Join("/sys/class/net", h.Veth, "statistics", "rx_bytes")); err == nil {
			tx, _ := readInt(filepath.Join("/sys/class/net", h.Veth, "statistics", "tx_bytes"))
			if prev, ok := m.net[h.Name]; ok && dt > 0 && rx+tx >= prev {
				hs.UplinkMbps = float64(rx+tx-prev) * 8 / 1e6 / dt
			}
			m.net[h.Name] = rx + tx
		}
		s.Hosts[h.Name] = hs
	}
	var groups []string
	for _, t := range m.twins {
		if t.Group != "" {
			groups = append(groups, t.Group)
		}
	}
	lags := kadm.DescribedGroupLags{}
	if len(groups) > 0 {
		var err error
		if lags, err = m.adm.Lag(ctx, groups...); err != nil {
			return s, fmt.Errorf("fleet: consumer lag: %w", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, t := range m.twins {
		at, ok := where[id]
		if !ok {
			continue
		}
		h, err := m.f.Lab.Host(at)
		if err != nil {
			continue
		}
		path := h.CgroupsPath(lab.Namespace, id)
		_, mib := memFrac(path)
		ts := placement.TwinSample{Host: at, TwinSignals: placement.TwinSignals{P99Ms: m.p99(id, now), CPU: cpuFrac(path), MemMiB: mib}}
		if l, ok := lags[t.Group]; ok && l.Error() == nil {
			ts.Lag = l.Lag.Total()
		}
		if dt > 0 && !first {
			ts.Rate = float64(m.rate[id]) / dt
		}
		m.rate[id] = 0
		s.Twins[id] = ts
	}
	return s, nil
}

// psi is the cgroup's cpu.pressure "some avg10" as a fraction, or -1 where the kernel offers
// none for it (cgroup v1).
func psi(path string) float64 {
	for _, p := range []string{filepath.Join(CgroupRoot, path, "cpu.pressure"), filepath.Join(CgroupRoot, "unified", path, "cpu.pressure")} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(strings.SplitN(string(b), "\n", 2)[0]) {
			if v, ok := strings.CutPrefix(f, "avg10="); ok {
				x, err := strconv.ParseFloat(v, 64)
				if err == nil {
					return x / 100
				}
			}
		}
	}
	return -1
}

// PSIPerCgroup says whether this machine offers per-cgroup pressure (cgroup v2's cpu.pressure),
// and what it found.
func PSIPerCgroup() (bool, string) {
	if _, err := os.Stat(filepath.Join(CgroupRoot, "cgroup.controllers")); err == nil {
		if _, err := os.Stat(filepath.Join(CgroupRoot, "cpu.pressure")); err == nil {
			return true, "cgroup v2 with PSI"
		}
		return false, "cgroup v2 without PSI (boot with psi=1)"
	}
	if _, err := os.Stat("/proc/pressure/cpu"); err == nil {
		return false, "cgroup v1: PSI only machine-wide (/proc/pressure), none per cgroup: psi_cpu is -1"
	}
	return false, "cgroup v1, no PSI: psi_cpu is -1"
}

func readInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// Load is real CPU load on a host: busy processes in the host's cgroup parent, so the host's
// CPU signal sees them as the host's own.
type Load struct {
	cmds []*exec.Cmd
	dir  string
}

// StartLoad runs n busy loops (sh) in host h's cgroup (CgroupParent/load, cpu and cpuacct
// hierarchies). Stop them with Stop; a lab teardown kills them too.
func StartLoad(h *lab.Host, n int) (*Load, error) {
	l := &Load{dir: filepath.Join(h.CgroupParent(), "load")}
	for _, hier := range []string{"cpu", "cpuacct"} {
		if err := os.MkdirAll(filepath.Join(CgroupRoot, hier, l.dir), 0o755); err != nil {
			return nil, fmt.Errorf("fleet: load cgroup: %w", err)
		}
	}
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			l.Stop()
			return nil, fmt.Errorf("fleet: start load: %w", err)
		}
		l.cmds = append(l.cmds, cmd)
		for _, hier := range []string{"cpu", "cpuacct"} {
			if err := os.WriteFile(filepath.Join(CgroupRoot, hier, l.dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
				l.Stop()
				return nil, fmt.Errorf("fleet: put load into %s: %w", l.dir, err)
			}
		}
	}
	return l, nil
}

// Stop ends the load.
func (l *Load) Stop() {
	for _, c := range l.cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	l.cmds = nil
	for _, hier := range []string{"cpu", "cpuacct"} {
		for range 20 {
			err := os.Remove(filepath.Join(CgroupRoot, hier, l.dir))
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
