package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/counter/memstate"
)

// TestProcess runs the real binary: its output lines, its HTTP endpoints and
// its exit on SIGTERM.
func TestProcess(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "counter")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	const mib, seed = 2, 5
	cmd := exec.Command(bin, "-mem-mib", "2", "-seed", "5", "-interval", "20ms", "-listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })

	errLine, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil {
		t.Fatalf("read listen address from stderr: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(errLine), "counter: listening on ")
	if !ok {
		t.Fatalf("unexpected stderr line %q", errLine)
	}

	// The checksum lineage is a pure function of (size, seed, tick).
	want := memstate.New(mib, seed)
	lines := bufio.NewScanner(stdout)
	var first state.State
	for tick := uint64(1); tick <= 10; tick++ {
		if !lines.Scan() {
			t.Fatalf("output ended before tick %d: %v", tick, lines.Err())
		}
		var s state.State
		if err := json.Unmarshal(lines.Bytes(), &s); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		want.Step(tick)
		if tick == 1 {
			first = s
		}
		if s.Tick != tick || s.MemMiB != mib || !s.MemOK || s.PID != cmd.Process.Pid ||
			s.StartNS != first.StartNS || s.Checksum != want.Checksum() || s.NowNS < s.StartNS {
			t.Fatalf("tick %d: got %+v, want checksum %s, start_ns %d", tick, s, want.Checksum(), first.StartNS)
		}
	}

	var s state.State
	getJSON(t, "http://"+addr+"/state", &s)
	if s.Tick < 10 || s.StartNS != first.StartNS || !s.MemOK {
		t.Fatalf("/state returned %+v", s)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("/healthz: %s %q", resp.Status, body)
	}

	// CRIU cannot dump MPTCP sockets, which Go listeners use by default since
	// Go 1.24: a client that asks for MPTCP must fall back to plain TCP.
	d := net.Dialer{}
	d.SetMultipathTCP(true)
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	mptcp, err := conn.(*net.TCPConn).MultipathTCP()
	conn.Close()
	if err != nil || mptcp {
		t.Fatalf("connection to the server uses MPTCP (%v, %v); CRIU could not dump the listener", mptcp, err)
	}

	go io.Copy(io.Discard, stdout) // keep draining so the process never blocks on a full pipe
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no exit within 2s of SIGTERM")
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
