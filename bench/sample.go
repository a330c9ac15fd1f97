package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CPU accounting by cgroup: v1 cpuacct where it is mounted (this project's test machine), the
// unified hierarchy's cpu.stat on a cgroup v2 host. Every process a move involves is in one of
// two groups: the benchmark's own (this process — migrator, agents, the kfake broker, sensors,
// verifier — and its children: the containerd daemons, shims, runc, CRIU, an Apache broker),
// which Measure joins before any lab starts, and the lab's containers (ftwin-lab/NAME: the
// twins, a rebuild included).

const cgroupRoot = "/sys/fs/cgroup"

// unified says whether CPU is accounted in the cgroup v2 hierarchy: no v1 cpuacct is mounted
// and /sys/fs/cgroup is the unified tree.
func unified() bool {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cpuacct", "cpuacct.usage")); err == nil {
		return false
	}
	_, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers"))
	return err == nil
}

// cpuGroup is the benchmark's own cgroup.
type cpuGroup struct {
	dir string // "" when accounting is unavailable
	v2  bool
}

// joinCPUGroup moves this process into a cgroup of its own, cpuacct/ftwin-bench/NAME (v1) or
// ftwin-bench/NAME (v2), so that it and every child it starts from now on are accounted
// together.
func joinCPUGroup(name string) (*cpuGroup, error) {
	v2 := unified()
	base := filepath.Join(cgroupRoot, "cpuacct")
	if v2 {
		base = cgroupRoot
	} else if _, err := os.Stat(filepath.Join(base, "cpuacct.usage")); err != nil {
		return &cpuGroup{}, fmt.Errorf("bench: neither a cgroup v1 cpuacct hierarchy at %s nor a cgroup v2 one at %s: CPU is not accounted: %w", base, cgroupRoot, err)
	}
	dir := filepath.Join(base, "ftwin-bench", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return &cpuGroup{}, fmt.Errorf("bench: create cgroup %s (root needed): %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return &cpuGroup{}, fmt.Errorf("bench: join cgroup %s: %w", dir, err)
	}
	return &cpuGroup{dir: dir, v2: v2}, nil
}

// leave moves this process back to the root group and removes its own (children still in it
// keep it; that is harmless).
func (g *cpuGroup) leave() {
	if g.dir == "" {
		return
	}
	_ = os.WriteFile(filepath.Join(filepath.Dir(filepath.Dir(g.dir)), "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	_ = os.Remove(g.dir)
}

// usage is the CPU time of the benchmark's group plus lab's containers.
func (g *cpuGroup) usage(lab string) time.Duration {
	if g.dir == "" {
		return 0
	}
	return groupCPU(g.dir) + cgroupCPU(path.Join("ftwin-lab", lab))
}

func readNanos(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(n)
}

// groupCPU is the CPU time of the cgroup directory dir: cpuacct.usage (v1, nanoseconds) or
// cpu.stat's usage_usec (v2).
func groupCPU(dir string) time.Duration {
	if _, err := os.Stat(filepath.Join(dir, "cpuacct.usage")); err == nil {
		return readNanos(filepath.Join(dir, "cpuacct.usage"))
	}
	return time.Duration(statValue(filepath.Join(dir, "cpu.stat"), "usage_usec")) * time.Microsecond
}

// cgroupCPU is the CPU time of the cgroup at cgroupsPath (as the lab gives it) in whichever
// hierarchy accounts it.
func cgroupCPU(cgroupsPath string) time.Duration {
	if unified() {
		return groupCPU(filepath.Join(cgroupRoot, cgroupsPath))
	}
	return groupCPU(filepath.Join(cgroupRoot, "cpuacct", cgroupsPath))
}

// containerCPU is the CPU time of one container (cgroups path as the lab gives it).
func containerCPU(cgroupsPath string) time.Duration { return cgroupCPU(cgroupsPath) }

// containerRSS is the resident anonymous memory of one container: memory.stat's total_rss (v1)
// or anon (v2, where the memory controller is enabled for it).
func containerRSS(cgroupsPath string) int64 {
	if unified() {
		return statValue(filepath.Join(cgroupRoot, cgroupsPath, "memory.stat"), "anon")
	}
	return statValue(filepath.Join(cgroupRoot, "memory", cgroupsPath, "memory.stat"), "total_rss")
}

// statValue reads the value of key in a cgroup file of "KEY VALUE" lines (cpu.stat,
// memory.stat); 0 when the file or the key is missing.
func statValue(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+" "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// linkBytes is what crossed a host's link both ways (its veth's counters in the root namespace).
func linkBytes(veth string) int64 {
	var n int64
	for _, f := range []string{"rx_bytes", "tx_bytes"} {
		n += int64(readNanos(filepath.Join("/sys/class/net", veth, "statistics", f)))
	}
	return n
}

// sample is one reading of the counters.
type sample struct {
	at   time.Time
	cpu  time.Duration
	link int64 // the target host's link
}

// sampler reads the counters every 50 ms until stopped.
type sampler struct {
	mu   sync.Mutex
	s    []sample
	stop chan struct{}
	done chan struct{}
}

func startSampler(read func() sample) *sampler {
	sp := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	sp.s = append(sp.s, read())
	go func() {
		defer close(sp.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sp.stop:
				sp.mu.Lock()
				sp.s = append(sp.s, read())
				sp.mu.Unlock()
				return
			case <-t.C:
				r := read()
				sp.mu.Lock()
				sp.s = append(sp.s, r)
				sp.mu.Unlock()
			}
		}
	}()
	return sp
}

func (sp *sampler) finish() []sample {
	close(sp.stop)
	<-sp.done
	return sp.s
}

// at interpolates the counters at time t between the samples around it.
func at(s []sample, t time.Time) (sample, error) {
	if len(s) == 0 || t.Before(s[0].at) || t.After(s[len(s)-1].at) {
		return sample{}, errors.New("bench: no counter samples around that time")
	}
	for i := 1; i < len(s); i++ {
		if !s[i].at.Before(t) {
			a, b := s[i-1], s[i]
			f := 0.0
			if d := b.at.Sub(a.at); d > 0 {
				f = float64(t.Sub(a.at)) / float64(d)
			}
			return sample{at: t, cpu: a.cpu + time.Duration(f*float64(b.cpu-a.cpu)), link: a.link + int64(f*float64(b.link-a.link))}, nil
		}
	}
	return s[len(s)-1], nil
}

// snapshot copies the samples taken so far.
func (sp *sampler) snapshot() []sample {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return slices.Clone(sp.s)
}
