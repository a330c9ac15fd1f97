package hooksock

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests stand a temporary directory in for the container's root: RESOLVE_IN_ROOT makes any
// directory a root. TestProcRoot also goes through /proc/PID/root of a chrooted process.

const sock = "/run/ftwin-migrate/hook.sock"

// lab is a host directory and a root beside it; host is an absolute host path that the root
// also holds (as root+host), so a link to it shows which of the two it reached.
type lab struct {
	root, host string
}

func newLab(t *testing.T) lab {
	t.Helper()
	// Short paths: a Unix socket's address holds 107 bytes, and the naive paths the
	// regression tests dial must fit.
	base, err := os.MkdirTemp("", "hs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	l := lab{root: filepath.Join(base, "root"), host: filepath.Join(base, "host")}
	for _, d := range []string{l.host, filepath.Join(l.root, "run"), filepath.Join(l.root, l.host)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// server answers every request with its name and counts the connections it accepted.
type server struct {
	name  string
	conns atomic.Int32
}

func serve(t *testing.T, path, name string) *server {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{name: name}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				resp := http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Request: req, Close: true,
					ContentLength: int64(len(name)), Body: io.NopCloser(strings.NewReader(name))}
				_ = resp.Write(c)
			}()
		}
	}()
	return s
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// ask sends one request through rt and returns the answer's body.
func ask(rt http.RoundTripper) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ftwin-hook/v1/status", nil)
	if err != nil {
		return "", err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// wantReaches checks that s serves and that a request to it is answered by want.
func wantReaches(t *testing.T, s Socket, want string) {
	t.Helper()
	if ok, err := s.Serves(); !ok || err != nil {
		t.Errorf("%v: Serves = %v, %v; want true", s, ok, err)
	}
	if got, err := ask(s.Transport()); got != want || err != nil {
		t.Errorf("%v: answer %q, %v; want %q", s, got, err, want)
	}
}

// wantRefused checks that s neither serves nor can be dialed, with an error saying why.
func wantRefused(t *testing.T, s Socket, why string) {
	t.Helper()
	if ok, err := s.Serves(); ok || err == nil || !strings.Contains(err.Error(), why) {
		t.Errorf("%v: Serves = %v, %v; want an error saying %q", s, ok, err, why)
	}
	if got, err := ask(s.Transport()); err == nil || !strings.Contains(err.Error(), why) {
		t.Errorf("%v: answer %q, %v; want an error saying %q", s, got, err, why)
	}
}

// wantAbsent checks that s serves nothing (no error) and cannot be dialed.
func wantAbsent(t *testing.T, s Socket) {
	t.Helper()
	if ok, err := s.Serves(); ok || err != nil {
		t.Errorf("%v: Serves = %v, %v; want false, no error", s, ok, err)
	}
	if got, err := ask(s.Transport()); err == nil {
		t.Errorf("%v: answered %q; want no connection", s, got)
	}
}

func noConns(t *testing.T, s *server) {
	t.Helper()
	if n := s.conns.Load(); n != 0 {
		t.Errorf("the %s socket was connected to %d times", s.name, n)
	}
}

func TestSocketInRoot(t *testing.T) {
	l := newLab(t)
	serve(t, l.root+sock, "container")
	wantReaches(t, Socket{Root: l.root, Path: sock}, "container")
	serve(t, l.root+"/hook.sock", "top")
	wantReaches(t, Socket{Root: l.root, Path: "/hook.sock"}, "top")
	// A symbolic link inside the root that stays inside it is followed.
	symlink(t, "ftwin-migrate", l.root+"/run/alias")
	wantReaches(t, Socket{Root: l.root, Path: "/run/alias/hook.sock"}, "container")
}

// An absolute link inside the root starts from the root, not from the host's "/".
func TestSocketAbsoluteLinkStaysInRoot(t *testing.T) {
	l := newLab(t)
	host := serve(t, l.host+"/hook.sock", "host")
	symlink(t, l.host, l.root+"/run/ftwin-migrate")
	s := Socket{Root: l.root, Path: sock}
	wantAbsent(t, s) // root+host holds no socket yet
	serve(t, l.root+l.host+"/hook.sock", "container")
	wantReaches(t, s, "container")
	// Through the host's /proc/self/root: inside the root that is root/proc/..., not the host.
	symlink(t, "/proc/self/root"+l.host, l.root+"/run/viaproc")
	wantAbsent(t, Socket{Root: l.root, Path: "/run/viaproc/hook.sock"})
	noConns(t, host)
}

// ".." in a relative link stops at the root, however many there are.
func TestSocketDotDotLinkStaysInRoot(t *testing.T) {
	l := newLab(t)
	host := serve(t, l.host+"/hook.sock", "host")
	up := strings.Repeat("../", 20)
	symlink(t, up+l.host[1:], l.root+"/run/ftwin-migrate")
	// Two links: one climbs, the next climbs from where the first left off.
	symlink(t, up, l.root+"/run/a/up")
	symlink(t, "a/up/../.."+l.host, l.root+"/run/b")
	for _, p := range []string{sock, "/run/b/hook.sock"} {
		wantAbsent(t, Socket{Root: l.root, Path: p})
	}
	serve(t, l.root+l.host+"/hook.sock", "container")
	for _, p := range []string{sock, "/run/b/hook.sock"} {
		wantReaches(t, Socket{Root: l.root, Path: p}, "container")
	}
	noConns(t, host)
}

// A symbolic link as the last component is refused, wherever it points.
func TestSocketLastLinkRefused(t *testing.T) {
	l := newLab(t)
	host := serve(t, l.host+"/hook.sock", "host")
	in := serve(t, l.root+"/run/real.sock", "container")
	symlink(t, l.host+"/hook.sock", l.root+sock)
	symlink(t, "../real.sock", l.root+"/run/ftwin-migrate/rel.sock")
	symlink(t, "/run/real.sock", l.root+"/run/ftwin-migrate/abs.sock")
	for _, p := range []string{sock, "/run/ftwin-migrate/rel.sock", "/run/ftwin-migrate/abs.sock"} {
		wantRefused(t, Socket{Root: l.root, Path: p}, "symbolic link")
	}
	noConns(t, host)
	noConns(t, in)
}

// A magic link of /proc on the way is refused: /proc/self/root leads to the host's root.
func TestSocketMagicLinkRefused(t *testing.T) {
	l := newLab(t)
	host := serve(t, l.host+"/hook.sock", "host")
	wantRefused(t, Socket{Root: "/proc/self", Path: "/root" + l.host + "/hook.sock"}, "magic link")
	wantRefused(t, Socket{Root: "/proc", Path: "/self/root" + l.host + "/hook.sock"}, "magic link")
	noConns(t, host)
}

func TestSocketNotASocket(t *testing.T) {
	l := newLab(t)
	if err := os.MkdirAll(l.root+"/run/ftwin-migrate/dir.sock", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.root+sock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(l.root+"/run/ftwin-migrate/fifo.sock", 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{sock, "/run/ftwin-migrate/dir.sock", "/run/ftwin-migrate/fifo.sock"} {
		wantRefused(t, Socket{Root: l.root, Path: p}, "not a socket")
	}
}

func TestSocketMissing(t *testing.T) {
	l := newLab(t)
	wantAbsent(t, Socket{Root: l.root, Path: sock})
	// A file where a directory should be.
	if err := os.WriteFile(l.root+"/run/file", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wantAbsent(t, Socket{Root: l.root, Path: "/run/file/hook.sock"})
	// A dangling link on the way.
	symlink(t, "/nowhere", l.root+"/run/ftwin-migrate")
	wantAbsent(t, Socket{Root: l.root, Path: sock})
	// No root (a process gone) serves nothing; a root that is no directory is an error.
	wantAbsent(t, Socket{Root: l.root + "/gone", Path: sock})
	wantRefused(t, Socket{Root: l.root + "/run/file", Path: sock}, "container's root")
}

func TestSocketBadPath(t *testing.T) {
	l := newLab(t)
	serve(t, l.root+sock, "container")
	for _, p := range []string{"", "run/ftwin-migrate/hook.sock", "/run/../run/ftwin-migrate/hook.sock", "/run//ftwin-migrate/hook.sock", "/run/./ftwin-migrate/hook.sock", sock + "/", "/"} {
		wantRefused(t, Socket{Root: l.root, Path: p}, "hook socket path")
	}
	wantRefused(t, Socket{Path: sock}, "no container root")
}

func TestSocketNoOpenat2(t *testing.T) {
	l := newLab(t)
	serve(t, l.root+sock, "container")
	defer func(f func(int, string, *unix.OpenHow) (int, error)) { openat2 = f }(openat2)
	openat2 = func(int, string, *unix.OpenHow) (int, error) { return -1, unix.ENOSYS }
	wantRefused(t, Socket{Root: l.root, Path: sock}, "openat2")
}

// The connection goes to the inode that was resolved and checked, even if the container puts a
// link to a host socket in its place before the dial.
func TestSocketDialsResolvedInode(t *testing.T) {
	l := newLab(t)
	host := serve(t, l.host+"/hook.sock", "host")
	serve(t, l.root+sock, "container")
	s := Socket{Root: l.root, Path: sock}
	fd, err := s.open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := os.Rename(l.root+sock, l.root+"/run/moved.sock"); err != nil {
		t.Fatal(err)
	}
	symlink(t, l.host+"/hook.sock", l.root+sock)
	rt := &Transport{Path: "/proc/self/fd/" + strconv.Itoa(fd)}
	if got, err := ask(rt); got != "container" || err != nil {
		t.Errorf("answer %q, %v; want container", got, err)
	}
	noConns(t, host)
}

// Regression: the plain path root+SOCKET, as hooksock.Path built it (/proc/PID/root/SOCKET),
// follows the container's absolute and climbing links on the host and reaches the host's
// socket; Socket reaches the container's.
func TestSocketRegressionPlainPathEscapes(t *testing.T) {
	l := newLab(t)
	serve(t, l.host+"/hook.sock", "host")
	serve(t, l.root+l.host+"/hook.sock", "container")
	symlink(t, l.host, l.root+"/run/abs")
	symlink(t, strings.Repeat("../", 20)+l.host[1:], l.root+"/run/rel")
	for _, p := range []string{"/run/abs/hook.sock", "/run/rel/hook.sock"} {
		if got, err := ask(&Transport{Path: l.root + p}); got != "host" || err != nil {
			t.Errorf("plain path %s: answer %q, %v; the risk is that it reaches the host's socket", l.root+p, got, err)
		}
		wantReaches(t, Socket{Root: l.root, Path: p}, "container")
	}
}

const chrootEnv = "HOOKSOCK_TEST_CHROOT"

func TestMain(m *testing.M) {
	if dir := os.Getenv(chrootEnv); dir != "" {
		// The helper of TestProcRoot: chroot into dir, say so, wait for stdin to close.
		if err := syscall.Chroot(dir); err != nil {
			fmt.Println("chroot:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestProcRoot goes through /proc/PID/root of a process chrooted into the lab's root (as root,
// or in a user namespace of its own), as the migrator and the agent do for a container's init.
func TestProcRoot(t *testing.T) {
	l := newLab(t)
	serve(t, l.host+"/hook.sock", "host")
	symlink(t, l.host, l.root+"/run/ftwin-migrate")
	serve(t, l.root+l.host+"/hook.sock", "container")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), chrootEnv+"="+l.root)
	if os.Geteuid() != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
		}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("no chrooted helper: %v", err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Skipf("no chrooted helper: %q", line)
	}
	s, err := InContainer(uint32(cmd.Process.Pid), sock)
	if err != nil {
		t.Fatal(err)
	}
	if link, err := os.Readlink(s.Root); err != nil || link != l.root {
		t.Fatalf("%s -> %q, %v; want %s", s.Root, link, err, l.root)
	}
	// The plain path, as the old code dialed it, escapes.
	if got, err := ask(&Transport{Path: s.Root + sock}); got != "host" || err != nil {
		t.Errorf("plain path %s: answer %q, %v; the risk is that it reaches the host's socket", s.Root+sock, got, err)
	}
	wantReaches(t, s, "container")
	if err := os.Remove(l.root + l.host + "/hook.sock"); err != nil {
		t.Fatal(err)
	}
	wantAbsent(t, s)
}
