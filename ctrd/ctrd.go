// Package ctrd starts and stops private containerd daemons, one per simulated host.
//
// A daemon started by this package runs inside a given network namespace and in a mount
// namespace of its own, in which the daemon's directory DIR/run is bind-mounted over
// /run/containerd. runc keeps its state under /run/containerd/runc and the shims put their
// sockets under /run/containerd/s, so two daemons on one machine never see each other's
// containers, while everything stays reachable from the root mount namespace under DIR
// (which is how a crashed run's leftovers are found and removed).
//
// Paths handed to the daemon (log files for task I/O, FIFO dirs, checkpoint dirs) must live
// outside /run/containerd: the shims resolve them in the daemon's mount namespace.
package ctrd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/ftwin-migrate/ftwin-migrate/internal/wait"
)

// Config describes one daemon.
type Config struct {
	// Dir holds everything the daemon owns: config.toml, containerd.sock, root/, run/, containerd.log.
	Dir string
	// NetNS is the path of the network namespace to run in (for example /run/netns/NAME).
	// Empty means the caller's network namespace.
	NetNS string
	// Env is added to the daemon's environment; shims, runc and criu inherit it
	// (this is how CRIU_FAULT=130 reaches criu).
	Env []string
	// StartTimeout bounds the wait for the socket to answer. Default 20s.
	StartTimeout time.Duration
	// Binary is the daemon to run: a name looked up on PATH or a path. Default "containerd";
	// containerd-ftwin is containerd with the ftwin-migrate plugin (cmd/containerd-ftwin).
	Binary string
	// ExtraConfig is TOML appended to the daemon's config.toml, e.g. a plugin's section
	// ([plugins."io.containerd.grpc.v1.ftwin-migrate"]).
	ExtraConfig string
	// Clock, when not zero, runs the daemon (and so its shims, runc, CRIU and every container
	// it starts) in a time namespace of its own whose CLOCK_MONOTONIC and CLOCK_BOOTTIME are
	// ahead of the machine's by these offsets, as two machines' uptimes differ. The zero value
	// shares the caller's clocks. See ClockOffsets.
	Clock ClockOffsets
}

// ClockOffsets are a time namespace's offsets from the machine's clocks, whole seconds
// (what /proc/PID/timens_offsets and unshare(1) take). They must not be negative: the
// kernel refuses an offset that would put a clock before zero, and a machine that booted
// minutes ago has little to take away.
type ClockOffsets struct {
	Monotonic time.Duration `json:"monotonic"`
	Boottime  time.Duration `json:"boottime"`
}

// IsZero reports whether o shares the machine's clocks.
func (o ClockOffsets) IsZero() bool { return o.Monotonic == 0 && o.Boottime == 0 }

func (o ClockOffsets) validate() error {
	for _, d := range []time.Duration{o.Monotonic, o.Boottime} {
		if d < 0 || d%time.Second != 0 {
			return fmt.Errorf("ctrd: clock offset %v: want whole seconds, not negative", d)
		}
	}
	return nil
}

func clockFile(dir string) string { return filepath.Join(dir, "clock.json") }

// DaemonClock returns the clock offsets of the daemon with directory dir (zero if it shares
// the machine's clocks, or was never started).
func DaemonClock(dir string) ClockOffsets {
	var o ClockOffsets
	if b, err := os.ReadFile(clockFile(dir)); err == nil {
		_ = json.Unmarshal(b, &o)
	}
	return o
}

// Daemon is a running containerd started by Start.
type Daemon struct {
	cfg Config
	pid int
}

// Socket returns the daemon's gRPC address for a containerd client.
func Socket(dir string) string { return filepath.Join(dir, "containerd.sock") }

func pidFile(dir string) string { return filepath.Join(dir, "containerd.pid") }

// DaemonPid returns the process id of the running daemon with directory dir (the containerd
// process itself: the wrappers exec it), whose namespaces (/proc/PID/ns) are the host's.
func DaemonPid(dir string) (int, error) {
	b, err := os.ReadFile(pidFile(dir))
	if err != nil {
		return 0, fmt.Errorf("ctrd: no daemon of %s: %w", dir, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("ctrd: pid file of %s: %w", dir, err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, fmt.Errorf("ctrd: the daemon of %s (pid %d) is not running: %w", dir, pid, err)
	}
	return pid, nil
}

// Start launches containerd as described by cfg and waits until it answers.
// The daemon outlives the calling process; call Stop (or Kill from another process) to end it.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	if cfg.Dir == "" {
		return nil, errors.New("ctrd: Config.Dir is empty")
	}
	// A Unix socket address holds 107 bytes: containerd would exit at start, saying little.
	if sock := Socket(cfg.Dir) + ".ttrpc"; len(sock) > 107 {
		return nil, fmt.Errorf("ctrd: daemon directory %s is too deep: its socket %s is %d bytes, a Unix socket path holds 107; use a shorter directory", cfg.Dir, sock, len(sock))
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 20 * time.Second
	}
	if cfg.Binary == "" {
		cfg.Binary = "containerd"
	}
	if err := cfg.Clock.validate(); err != nil {
		return nil, err
	}
	for _, tool := range []string{cfg.Binary, "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("ctrd: %s not found (run `make install`): %w", tool, err)
		}
	}
	for _, d := range []string{"root", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o711); err != nil {
			return nil, fmt.Errorf("ctrd: create daemon directory: %w", err)
		}
	}
	if err := os.MkdirAll("/run/containerd", 0o711); err != nil {
		return nil, fmt.Errorf("ctrd: create mount point /run/containerd: %w", err)
	}
	confPath := filepath.Join(cfg.Dir, "config.toml")
	if err := os.WriteFile(confPath, []byte(configTOML(cfg.Dir)+cfg.ExtraConfig), 0o644); err != nil {
		return nil, fmt.Errorf("ctrd: write %s: %w", confPath, err)
	}
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ctrd: open daemon log: %w", err)
	}
	defer logf.Close()

	bin, _ := exec.LookPath(cfg.Binary)
	script := fmt.Sprintf("mount --bind %s /run/containerd && exec %s --config %s",
		shellQuote(filepath.Join(cfg.Dir, "run")), shellQuote(bin), shellQuote(confPath))
	args := []string{"unshare", "--mount", "--propagation", "private"}
	if !cfg.Clock.IsZero() {
		// The time namespace takes effect at the exec of sh, before anything reads a clock.
		args = append(args, "--time", "--monotonic", strconv.FormatInt(int64(cfg.Clock.Monotonic/time.Second), 10),
			"--boottime", strconv.FormatInt(int64(cfg.Clock.Boottime/time.Second), 10))
	}
	args = append(args, "--", "sh", "-c", script)
	// Kill reads the offsets to recognise the daemon's containers (see ContainerInits).
	clock, _ := json.Marshal(cfg.Clock)
	if err := os.WriteFile(clockFile(cfg.Dir), clock, 0o644); err != nil {
		return nil, fmt.Errorf("ctrd: write %s: %w", clockFile(cfg.Dir), err)
	}
	if cfg.NetNS != "" {
		args = append([]string{"nsenter", "--net=" + cfg.NetNS, "--"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	// containerd unpacks a checkpoint it restores from its content store into a temporary
	// directory under $XDG_RUNTIME_DIR (else /tmp) and never removed it (1.7): keep those in the
	// daemon's directory, which goes with the daemon.
	cmd.Env = append(append(os.Environ(), "XDG_RUNTIME_DIR="+filepath.Join(cfg.Dir, "tmp")), cfg.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ctrd: start containerd in %s: %w", cfg.Dir, err)
	}
	d := &Daemon{cfg: cfg, pid: cmd.Process.Pid}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := os.WriteFile(pidFile(cfg.Dir), []byte(strconv.Itoa(d.pid)), 0o644); err != nil {
		_ = d.Stop(ctx)
		return nil, fmt.Errorf("ctrd: write pid file: %w", err)
	}

	var exitErr, pingErr error
	up, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	err = wait.Until(up, 50*time.Millisecond, func() (bool, error) {
		select {
		case err := <-exited:
			exitErr = fmt.Errorf("ctrd: containerd exited during startup (%v); %s ends with:\n%s", err, filepath.Join(cfg.Dir, "containerd.log"), logTail(filepath.Join(cfg.Dir, "containerd.log"), 2000))
			return false, exitErr
		default:
		}
		pingErr = ping(ctx, Socket(cfg.Dir))
		return pingErr == nil, nil
	})
	switch {
	case err == nil:
		return d, nil
	case exitErr != nil:
		return nil, exitErr
	case ctx.Err() != nil:
		_ = d.Stop(ctx)
		return nil, ctx.Err()
	}
	_ = d.Stop(ctx)
	return nil, fmt.Errorf("ctrd: containerd at %s did not answer within %s: %w", Socket(cfg.Dir), cfg.StartTimeout, pingErr)
}

func ping(ctx context.Context, sock string) error {
	if _, err := os.Stat(sock); err != nil {
		return err
	}
	c, err := containerd.New(sock, containerd.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err
}

// Address returns the daemon's gRPC socket.
func (d *Daemon) Address() string { return Socket(d.cfg.Dir) }

// Dir returns the daemon's directory.
func (d *Daemon) Dir() string { return d.cfg.Dir }

// Pid returns the daemon's process id.
func (d *Daemon) Pid() int { return d.pid }

// Client connects a containerd client to the daemon.
func (d *Daemon) Client() (*containerd.Client, error) {
	c, err := containerd.New(d.Address(), containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("ctrd: connect to %s: %w", d.Address(), err)
	}
	return c, nil
}

// Stop ends the daemon and everything it started: every container runc knows of in this
// daemon's state is killed, then the shims and the daemon itself. It is what Kill does, for a
// daemon this process started.
func (d *Daemon) Stop(ctx context.Context) error { return Kill(ctx, d.cfg.Dir) }

// Kill stops whatever a daemon with directory dir left running, whether or not the daemon is
// still alive: container init processes recorded in runc's state, processes whose command
// line names dir (the daemon and its shims), then unmounts whatever remains mounted under dir.
// It is safe to call on a directory with nothing running.
func Kill(ctx context.Context, dir string) error {
	var errs []error
	// Container init processes: each is PID 1 of its own PID namespace, so killing it ends the
	// whole container.
	for _, pid := range ContainerInits(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range PidsMentioning(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Up to 10s for them to be gone, even when ctx is done: what is left is unmounted anyway.
	gone, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	if wait.Until(gone, 50*time.Millisecond, func() (bool, error) { return len(PidsMentioning(dir)) == 0, nil }) != nil {
		errs = append(errs, fmt.Errorf("ctrd: processes of %s still alive after SIGKILL: %v", dir, PidsMentioning(dir)))
	}
	cancel()
	for _, m := range MountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("ctrd: unmount %s: %w", m, err))
		}
	}
	_ = os.Remove(pidFile(dir))
	return errors.Join(errs...)
}

// ContainerInits lists the init processes of the containers runc knows of in daemon directory
// dir that are still alive: init_process_pid in each runc state.json, checked against
// init_process_start so a recycled pid is never taken for a container. runc read that start
// time in the daemon's time namespace, where /proc shows it shifted by the namespace's
// boottime offset (see DaemonClock); it is compared as the caller sees it, here.
func ContainerInits(dir string) []int {
	var pids []int
	shift := (int64(DaemonClock(dir).Boottime/time.Second) - selfBoottimeOffset()) * clockTicks
	states, _ := filepath.Glob(filepath.Join(dir, "run", "runc", "*", "*", "state.json"))
	for _, s := range states {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		var st struct {
			Pid   int    `json:"init_process_pid"`
			Start uint64 `json:"init_process_start"`
		}
		if json.Unmarshal(b, &st) != nil || st.Pid <= 1 {
			continue
		}
		if start, err := processStartTime(st.Pid); err == nil && int64(start)+shift == int64(st.Start) {
			pids = append(pids, st.Pid)
		}
	}
	return pids
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux architecture
// Go supports.
const clockTicks = 100

// selfBoottimeOffset is the boottime offset, in seconds, of the caller's own time namespace
// (0 in the machine's), from /proc/self/timens_offsets.
func selfBoottimeOffset() int64 {
	b, err := os.ReadFile("/proc/self/timens_offsets")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "boottime" {
			s, _ := strconv.ParseInt(f[1], 10, 64)
			return s
		}
	}
	return 0
}

// processStartTime reads field 22 (starttime, in clock ticks since boot) of /proc/PID/stat.
func processStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after it start past the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// PidsMentioning lists processes whose command line contains s (the daemon, its shims and the
// wrapper processes of a daemon directory), excluding the caller.
func PidsMentioning(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// MountsUnder lists mount points in the caller's mount namespace at or below dir, deepest first.
func MountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var ms []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			ms = append(ms, mp)
		}
	}
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func configTOML(dir string) string {
	return fmt.Sprintf(`# Written by ftwin-migrate (package ctrd). One private daemon per simulated host.
version = 3
root = %[1]q
state = "/run/containerd"
# No Kubernetes here: the CRI plugins would only slow the start and watch for pods.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox"]

[grpc]
  address = %[2]q

[ttrpc]
  address = %[3]q
`, filepath.Join(dir, "root"), Socket(dir), Socket(dir)+".ttrpc")
}

// logTail returns the last n bytes of the file at path, or why it cannot.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
