// Package hooksock reaches an application's migration hook: a Unix socket inside a container,
// spoken to with one HTTP/1.1 request per connection (the protocol is kafkahooks/PROTOCOL.md;
// this package knows nothing of its calls).
//
// A host process reaches the socket through the container's root, /proc/PID/root, so no port is
// published. The socket's path (a clean absolute path, CheckSocket) is resolved inside that root
// with openat2(2) and RESOLVE_IN_ROOT, never as the plain path /proc/PID/root/SOCKET: the
// container's files are the container's to make, and a symbolic link among them (absolute, or
// relative with enough "..") followed from the host would resolve against the host's root and
// reach a host socket. Resolved in the root, ".." stops at the container's root and an absolute
// link starts from it; a /proc magic link on the way is refused, and so is a symbolic link as
// the last component or anything there but a socket. The connection goes to the inode so
// resolved (through /proc/self/fd), not to a path resolved again. A kernel without openat2
// (before Linux 5.6) gets an error, not a fallback.
//
// Each request gets a connection of its own, and the caller waits for the server to
// close it after the answer: when a call returns, no socket of the container is connected to
// the host, so a CRIU dump taken right after finds none to carry.
package hooksock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MaxAnswer bounds the body of an answer read from a hook.
const MaxAnswer = 1 << 20

// maxUnixPath is the longest path a Unix socket address holds on Linux (sun_path less the NUL).
const maxUnixPath = 107

// closeWait bounds the wait for the server to close the connection after its answer, when the
// caller's context has no earlier deadline.
const closeWait = 5 * time.Second

// CheckSocket accepts socket, a path inside a container, only when it is absolute and clean:
// no "..", no ".", no doubled or trailing slash. Such a path cannot climb out of the container's
// root by its own components; Socket resolves it so that its symbolic links cannot either.
func CheckSocket(socket string) error {
	switch {
	case socket == "":
		return errors.New("hook socket path is empty")
	case !strings.HasPrefix(socket, "/"):
		return fmt.Errorf("hook socket path %q: want an absolute path inside the container", socket)
	case path.Clean(socket) != socket || socket == "/":
		return fmt.Errorf("hook socket path %q: want a clean path (no \"..\", \".\" or doubled slashes), such as %q", socket, path.Clean(socket))
	}
	return nil
}

// Socket is a hook socket inside a container: Path, a path inside the container, resolved in
// Root, the container's root directory as the host sees it.
type Socket struct {
	// Root is the container's root directory on the host: /proc/PID/root (see InContainer), or
	// any directory that stands for one (tests).
	Root string
	// Path is the socket's path inside Root: a clean absolute path (see CheckSocket).
	Path string
}

// InContainer returns socket (a path inside the container) of the container whose init process
// is pid, whose root the host sees at /proc/PID/root.
func InContainer(pid uint32, socket string) (Socket, error) {
	if err := CheckSocket(socket); err != nil {
		return Socket{}, err
	}
	if pid == 0 {
		return Socket{}, errors.New("hook socket: the container has no init process")
	}
	return Socket{Root: "/proc/" + strconv.FormatUint(uint64(pid), 10) + "/root", Path: socket}, nil
}

// String names the socket in messages.
func (s Socket) String() string { return s.Path + " in " + s.Root }

// Transport returns a Transport whose requests go to s.
func (s Socket) Transport() *Transport { return &Transport{socket: &s} }

// openat2 is unix.Openat2; tests replace it.
var openat2 = unix.Openat2

// open resolves s.Path inside s.Root and returns an O_PATH descriptor of what is there, which
// must be a socket. Every component is resolved with the root as "/" (RESOLVE_IN_ROOT): ".."
// stops at the root and an absolute symbolic link starts again from it. Magic links (those of
// /proc) are refused, and so is a symbolic link as the last component.
func (s Socket) open() (int, error) {
	fd, _, err := s.resolve()
	return fd, err
}

// resolve is open; absent tells that the error is only that nothing is at the path.
func (s Socket) resolve() (fd int, absent bool, err error) {
	if err := CheckSocket(s.Path); err != nil {
		return -1, false, err
	}
	if s.Root == "" {
		return -1, false, fmt.Errorf("hook socket %s: no container root to resolve it in", s.Path)
	}
	root, err := unix.Open(s.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		// No root (ENOENT: the process is gone) holds no socket either.
		return -1, err == unix.ENOENT, fmt.Errorf("hook socket %s: open the container's root: %w", s, &os.PathError{Op: "open", Path: s.Root, Err: err})
	}
	defer unix.Close(root)
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	// EAGAIN: a rename or mount raced the resolution (the kernel cannot tell it stayed inside
	// the root); try again a few times.
	for range 8 {
		if fd, err = openat2(root, s.Path[1:], &how); err != unix.EAGAIN {
			break
		}
	}
	switch {
	case err == unix.ENOSYS:
		return -1, false, fmt.Errorf("hook socket %s: this kernel has no openat2(2) (Linux 5.6 or later is needed) to resolve it safely inside the container's root: %w", s, err)
	case err == unix.ELOOP:
		return -1, false, fmt.Errorf("hook socket %s: too many symbolic links, or a /proc magic link, on the way: %w", s, err)
	case err != nil:
		return -1, err == unix.ENOENT || err == unix.ENOTDIR, fmt.Errorf("hook socket %s: %w", s, &os.PathError{Op: "openat2", Path: s.Path, Err: err})
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, false, fmt.Errorf("hook socket %s: %w", s, &os.PathError{Op: "fstat", Path: s.Path, Err: err})
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return fd, false, nil
	case unix.S_IFLNK:
		unix.Close(fd)
		return -1, false, fmt.Errorf("hook socket %s: is a symbolic link (refused as the last component: name the socket itself)", s)
	default:
		unix.Close(fd)
		return -1, false, fmt.Errorf("hook socket %s: is not a socket", s)
	}
}

// Serves reports whether a Unix socket is at s.Path inside s.Root: false and no error when
// nothing is there, an error when something else is (a file, a directory, a symbolic link) or
// the path cannot be resolved (no openat2, a root that is no directory). A root that does not
// exist (a process gone) serves nothing.
func (s Socket) Serves() (bool, error) {
	fd, absent, err := s.resolve()
	if absent {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	unix.Close(fd)
	return true, nil
}

// DialContext connects to the socket. It connects to /proc/self/fd/N, N being the descriptor
// that open resolved inside the root: the kernel follows that link to the very inode that was
// checked, so nothing the container renames or links in the meantime changes where the
// connection goes, and no path is resolved against the host's root.
func (s Socket) DialContext(ctx context.Context) (net.Conn, error) {
	fd, err := s.open()
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
	if err != nil {
		return nil, fmt.Errorf("dial hook socket %s: %w", s, err)
	}
	return conn, nil
}

// Transport is an http.RoundTripper that sends each request over a connection of its own to
// its Unix socket and, once the answer is read, waits for the server to close that
// connection. The answer's body is read whole (at most MaxAnswer bytes) before RoundTrip
// returns. The end of the request's context interrupts a blocked read or write.
//
// A Transport made by Socket.Transport reaches that socket inside its container's root; one
// made with Path dials that path on the host as it is, for a socket whose whole path the caller
// trusts (a test's, or a process's on the host), never for one inside a container.
type Transport struct {
	// Path is the socket's path on the host; Socket.Transport leaves it empty.
	Path   string
	socket *Socket
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	conn, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The end of ctx interrupts a blocked read or write (ctx.Err is set by then, so the error
	// says why).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("hook socket %s: %s: %w", t.where(), what, err)
	}

	out := req.Clone(ctx)
	out.Close = true
	if out.Host == "" {
		out.Host = "ftwin-hook"
	}
	if err := out.Write(conn); err != nil {
		return nil, fail("send the request", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		return nil, fail("read the answer", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	resp.Body.Close()
	if err != nil {
		return nil, fail("read the answer's body", err)
	}
	// Wait for the server's close: the server's end of the connection is then gone too.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > closeWait {
		_ = conn.SetReadDeadline(time.Now().Add(closeWait))
	}
	if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, io.EOF) {
		return nil, fail("wait for the server to close the connection", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

func (t *Transport) dial(ctx context.Context) (net.Conn, error) {
	if t.socket != nil {
		return t.socket.DialContext(ctx)
	}
	if len(t.Path) > maxUnixPath {
		return nil, fmt.Errorf("hook socket path %q is longer than the %d bytes a Unix address holds", t.Path, maxUnixPath)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", t.Path)
	if err != nil {
		return nil, fmt.Errorf("dial hook socket %s: %w", t.Path, err)
	}
	return conn, nil
}

func (t *Transport) where() string {
	if t.socket != nil {
		return t.socket.String()
	}
	return t.Path
}
