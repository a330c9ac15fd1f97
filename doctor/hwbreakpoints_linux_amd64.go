//go:build linux && amd64

package doctor

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// debugRegOffset is offsetof(struct user, u_debugreg) on x86_64: where PTRACE_POKEUSER
	// and PTRACE_PEEKUSER find the debug registers DR0..DR7, 8 bytes each.
	debugRegOffset = 848
	// dr7ExecL0 enables breakpoint 0 locally (L0) as a 1-byte instruction breakpoint
	// (R/W0 = 00, LEN0 = 00), the value CRIU writes.
	dr7ExecL0 = 1
	// dr6B0 is the DR6 bit saying breakpoint 0 was hit.
	dr6B0 = 1
	// atEntry is AT_ENTRY, the program's entry point in the ELF auxiliary vector.
	atEntry = 9
	// probeTimeout bounds the probe; `true` runs in milliseconds.
	probeTimeout = 5 * time.Second
)

// HWBreakpointsWork reports whether hardware breakpoints fire on this host, by trying one.
//
// It starts `true`, a dynamically linked program, under ptrace. At the exec stop the
// tracee is at the entry of its ELF interpreter (ld.so); the program's own entry point
// (AT_ENTRY) runs once ld.so has loaded the libraries. The probe puts an instruction
// breakpoint there in DR0/DR7, as CRIU does for a parasite's last syscall, and continues
// the tracee: a working breakpoint stops it with SIGTRAP at that address and DR6.B0 set; a
// broken one lets it run to exit. The breakpoint is not at the address the tracee resumes
// from, so the resume flag (RF), which lets the first instruction after a resume pass an
// instruction breakpoint, plays no part.
//
// `criu check --feature breakpoints` is no substitute: it only tests that the debug
// registers can be written, and so does CRIU before it relies on them. Where they can be
// written but do not fire (as seen in a PVM guest), `criu dump` hangs.
func HWBreakpointsWork() (bool, error) {
	ok, err := probeHWBreakpoint()
	if err != nil {
		return false, fmt.Errorf("doctor: hardware breakpoint probe: %w", err)
	}
	return ok, nil
}

func probeHWBreakpoint() (bool, error) {
	path, err := exec.LookPath("true")
	if err != nil {
		return false, err
	}
	// Every ptrace request must come from the thread that started the tracee.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	cmd := exec.Command(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("start %s: %w", path, err)
	}
	t := &tracee{pid: cmd.Process.Pid}
	var timedOut atomic.Bool
	timer := time.AfterFunc(probeTimeout, func() {
		timedOut.Store(true)
		_ = cmd.Process.Kill()
	})
	defer func() {
		timer.Stop()
		if !t.gone {
			_ = cmd.Process.Kill()
			_, _ = t.wait()
		}
		_ = cmd.Process.Release()
	}()

	fired, err := t.breakpointFires()
	if timedOut.Load() {
		return false, fmt.Errorf("%s did not finish within %v", path, probeTimeout)
	}
	return fired, err
}

// tracee is a child started with PTRACE_TRACEME, traced by the calling (locked) thread.
type tracee struct {
	pid  int
	gone bool // exited or killed, and reaped
}

// breakpointFires runs the probe on a tracee waiting to report its exec stop.
func (t *tracee) breakpointFires() (bool, error) {
	ws, err := t.wait()
	if err != nil {
		return false, err
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return false, fmt.Errorf("expected the exec stop, got wait status %#x", uint32(ws))
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.pid, &regs); err != nil {
		return false, fmt.Errorf("read registers: %w", err)
	}
	entry, err := auxvEntry(t.pid)
	if err != nil {
		return false, err
	}
	if entry == regs.Rip {
		return false, fmt.Errorf("the probe program has no ELF interpreter: its entry point %#x is where it stands", entry)
	}
	if err := t.pokeDebugReg(0, entry); err != nil {
		return false, err
	}
	if err := t.pokeDebugReg(7, dr7ExecL0); err != nil {
		return false, err
	}

	sig := 0
	for {
		if err := unix.PtraceCont(t.pid, sig); err != nil {
			return false, fmt.Errorf("PTRACE_CONT: %w", err)
		}
		ws, err := t.wait()
		switch {
		case err != nil:
			return false, err
		case ws.Exited():
			return false, nil // ran past the breakpoint
		case ws.Signaled():
			return false, fmt.Errorf("probe program killed by %v", ws.Signal())
		case ws.StopSignal() == unix.SIGTRAP:
			dr6, err := t.peekDebugReg(6)
			if err != nil {
				return false, err
			}
			if err := unix.PtraceGetRegs(t.pid, &regs); err != nil {
				return false, fmt.Errorf("read registers: %w", err)
			}
			if dr6&dr6B0 == 0 || regs.Rip != entry {
				return false, fmt.Errorf("SIGTRAP at %#x with DR6 %#x, not the breakpoint at %#x", regs.Rip, dr6, entry)
			}
			return true, nil
		default: // another signal: deliver it
			sig = int(ws.StopSignal())
		}
	}
}

// wait waits for the tracee's next stop or its end.
func (t *tracee) wait() (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(t.pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait4: %w", err)
		}
		t.gone = ws.Exited() || ws.Signaled()
		return ws, nil
	}
}

func (t *tracee) pokeDebugReg(n int, val uint64) error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], val)
	if _, err := unix.PtracePokeUser(t.pid, uintptr(debugRegOffset+8*n), b[:]); err != nil {
		return fmt.Errorf("set DR%d: %w", n, err)
	}
	return nil
}

func (t *tracee) peekDebugReg(n int) (uint64, error) {
	var b [8]byte
	if _, err := unix.PtracePeekUser(t.pid, uintptr(debugRegOffset+8*n), b[:]); err != nil {
		return 0, fmt.Errorf("read DR%d: %w", n, err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// auxvEntry returns AT_ENTRY from the auxiliary vector of process pid.
func auxvEntry(pid int) (uint64, error) {
	auxv, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return 0, err
	}
	for i := 0; i+16 <= len(auxv); i += 16 {
		if binary.NativeEndian.Uint64(auxv[i:]) == atEntry {
			return binary.NativeEndian.Uint64(auxv[i+8:]), nil
		}
	}
	return 0, fmt.Errorf("no AT_ENTRY in /proc/%d/auxv", pid)
}
