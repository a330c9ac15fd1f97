package migrate

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// world is a source host, a target host and an application, faked: every call is logged and
// may be made to fail; the state says how many copies of the workload run and where.
type world struct {
	t    *testing.T
	log  []string
	fail map[string]error
	// block makes a call wait for the end of its context instead of answering.
	block map[string]bool

	// the source
	srcFrozen, srcRemoved bool
	srcLabel              string
	// the target
	sessionOpen, copyRunning, committed bool
	// the application
	prepared, copyResumed bool
	// agentKillsQuietCopy: the agent kills its uncommitted copy once heartbeats stop, so it
	// says it is gone when asked after the deadline.
	agentKillsQuietCopy bool
	// copyDiesAfterVerify: the restored copy exits right after the first verify (as an
	// application does that exits when its broker connections drop).
	copyDiesAfterVerify bool
	// probe is what the target says of the probe ("ok", or "" for none).
	probe string
	// dieAfter: the source's task is gone after this many Running calls (0: never).
	dieAfter, runningCalls int
	sourceDead             bool

	mu         sync.Mutex // heartbeats come from a goroutine of their own
	heartbeats int
}

func newWorld(t *testing.T) *world {
	return &world{t: t, fail: map[string]error{}, block: map[string]bool{}}
}

var errInjected = errors.New("injected failure")

func (w *world) call(ctx context.Context, name string) error {
	w.log = append(w.log, name)
	if w.block[name] {
		<-ctx.Done()
		return ctx.Err()
	}
	return w.fail[name]
}

// copies says where the workload runs: a frozen or removed source does not run.
func (w *world) copies() (source, target bool) {
	return !w.srcFrozen && !w.srcRemoved, w.copyRunning
}

type fakeSource struct{ *world }

func (s fakeSource) Running(ctx context.Context) (TaskInfo, error) {
	s.runningCalls++
	if s.dieAfter > 0 && s.runningCalls > s.dieAfter {
		s.sourceDead = true
		s.log = append(s.log, "source.Running")
		return TaskInfo{}, errors.New("task gone")
	}
	return TaskInfo{Pid: 4242, ResidentBytes: 64 << 20}, s.call(ctx, "source.Running")
}
func (s fakeSource) CPUInfo(ctx context.Context) ([]byte, error) {
	return []byte("cpuinfo"), s.call(ctx, "source.CPUInfo")
}
func (s fakeSource) SetMigrating(ctx context.Context, m *Migrating) error {
	name, target := "source.ClearMigrating", ""
	if m != nil {
		name, target = "source.SetMigrating", m.Target
		if !strings.HasPrefix(filepath.Base(m.WorkDir), workDirPrefix) || !strings.HasPrefix(m.Checkpoint, checkpointPrefix) {
			s.t.Errorf("labels name work dir %q and checkpoint %q", m.WorkDir, m.Checkpoint)
		}
	}
	if err := s.call(ctx, name); err != nil {
		return err
	}
	s.srcLabel = target
	return nil
}
func (s fakeSource) Freeze(ctx context.Context) error {
	if err := s.call(ctx, "source.Freeze"); err != nil {
		return err
	}
	s.srcFrozen = true
	return nil
}
func (s fakeSource) Thaw(ctx context.Context) error {
	if err := s.call(ctx, "source.Thaw"); err != nil {
		return err
	}
	s.srcFrozen = false
	return nil
}
func (s fakeSource) Checkpoint(ctx context.Context, ref, workDir, imageDir string) (*checkpoint.Result, error) {
	if err := s.call(ctx, "source.Checkpoint"); err != nil {
		return nil, err
	}
	// An index of a type transfer does not descend into: the walk reads no content.
	return &checkpoint.Result{Ref: ref, Target: ocispec.Descriptor{MediaType: "application/x-test-checkpoint", Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000", Size: 1}}, nil
}
func (s fakeSource) Content(context.Context) content.Provider { return nil }
func (s fakeSource) DeleteCheckpoint(ctx context.Context, ref string) error {
	s.log = append(s.log, "source.DeleteCheckpoint")
	return nil
}
func (s fakeSource) Remove(ctx context.Context) error {
	if err := s.call(ctx, "source.Remove"); err != nil {
		return err
	}
	s.srcRemoved, s.srcFrozen = true, false
	return nil
}

type fakeTarget struct{ *world }

func (t fakeTarget) Hello(ctx context.Context) (agent.Hello, error) {
	return agent.Hello{Protocol: agent.ProtocolVersion, Host: "fog", FreeBytes: 1 << 30}, t.call(ctx, "target.Hello")
}
func (t fakeTarget) CheckCPU(ctx context.Context, _ []byte) error {
	return t.call(ctx, "target.CheckCPU")
}
func (t fakeTarget) Open(ctx context.Context, _ agent.SessionRequest) (agent.Session, error) {
	if err := t.call(ctx, "target.Open"); err != nil {
		return agent.Session{}, err
	}
	t.sessionOpen = true
	return agent.Session{ID: "s1", Timeout: time.Minute, HeartbeatTimeout: 40 * time.Millisecond}, nil
}
func (t fakeTarget) Receiver() Receiver { return t }
func (t fakeTarget) Missing(ctx context.Context, _ []ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return nil, t.call(ctx, "target.Missing")
}
func (t fakeTarget) Put(ctx context.Context, _ ocispec.Descriptor, r io.Reader) (int64, error) {
	t.t.Fatal("Put called although the target holds every blob")
	return 0, nil
}
func (t fakeTarget) PutDir(ctx context.Context, r io.Reader) (int64, string, error) {
	if err := t.call(ctx, "target.PutDir"); err != nil {
		_, _ = io.Copy(io.Discard, r)
		return 0, "", err
	}
	sum, err := transfer.ReceiveDir(r, t.t.TempDir(), 0)
	return 0, sum, err
}
func (t fakeTarget) Restore(ctx context.Context, _ ocispec.Descriptor, _ string) (agent.RestoreResult, error) {
	if err := t.call(ctx, "target.Restore"); err != nil {
		return agent.RestoreResult{}, err
	}
	t.copyRunning = true
	return agent.RestoreResult{Duration: time.Millisecond}, nil
}
func (t fakeTarget) HookTransport() http.RoundTripper { return nil }
func (t fakeTarget) Verify(ctx context.Context) (agent.VerifyResult, error) {
	if err := t.call(ctx, "target.Verify"); err != nil {
		return agent.VerifyResult{}, err
	}
	if t.copyDiesAfterVerify {
		defer func() { t.copyRunning = false }()
	}
	return agent.VerifyResult{Running: t.copyRunning, Probe: t.probe}, nil
}
func (t fakeTarget) Heartbeat(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.heartbeats++
	return nil
}
func (t fakeTarget) CopyGone(ctx context.Context) (bool, error) {
	if err := t.call(ctx, "target.CopyGone"); err != nil {
		return false, err
	}
	if t.agentKillsQuietCopy {
		t.copyRunning = false
	}
	return !t.copyRunning, nil
}
func (t fakeTarget) Commit(ctx context.Context) error {
	if err := t.call(ctx, "target.Commit"); err != nil {
		return err
	}
	t.committed = true
	return nil
}
func (t fakeTarget) Abort(ctx context.Context) error {
	if err := t.call(ctx, "target.Abort"); err != nil {
		return err
	}
	t.sessionOpen, t.copyRunning = false, false
	return nil
}

type fakeHook struct{ *world }

var boundary = kafkahooks.Offsets{"sensors": {0: 120, 1: 98}}

func (h fakeHook) Prepare(ctx context.Context) (*kafkahooks.Boundary, error) {
	if err := h.call(ctx, "hook.Prepare"); err != nil {
		return nil, err
	}
	h.prepared = true
	return &kafkahooks.Boundary{Protocol: kafkahooks.Version, Group: "twin", Offsets: boundary}, nil
}
func (h fakeHook) Resume(ctx context.Context, _ http.RoundTripper) (kafkahooks.Offsets, error) {
	if err := h.call(ctx, "hook.Resume"); err != nil {
		return nil, err
	}
	h.copyResumed = true
	return boundary, nil
}
func (h fakeHook) Abort(ctx context.Context) error {
	if err := h.call(ctx, "hook.Abort"); err != nil {
		return err
	}
	h.prepared = false
	return nil
}

func (w *world) run(t *testing.T, o Options) (*Report, error) {
	t.Helper()
	o.Container, o.Target, o.SourceHost = "twin", "fog:7443", "cloud"
	if o.Settle == 0 {
		o.Settle = time.Millisecond
	}
	if o.Hook == nil && o.HookMode != HookOff {
		o.Hook = fakeHook{w}
	}
	rep, err := Run(context.Background(), fakeSource{w}, fakeTarget{w}, o)
	if rep == nil {
		t.Fatalf("no report (err %v)", err)
	}
	return rep, err
}

// The calls of a migration that succeeds, in order.
var successCalls = []string{
	"source.Running", "target.Hello", "source.CPUInfo", "target.CheckCPU", "target.Open", // preflight
	"hook.Prepare",                                              // quiesce
	"source.SetMigrating", "source.Freeze", "source.Checkpoint", // checkpoint
	"target.Missing", "target.PutDir", // transfer
	"target.Restore",                 // restore
	"hook.Resume",                    // resume
	"target.Verify", "target.Verify", // verify, and again after the settle window
	"target.Commit", "source.Remove", // commit
	"source.DeleteCheckpoint", // cleanup
}

func TestPipelineCommits(t *testing.T) {
	w := newWorld(t)
	rep, err := w.run(t, Options{})
	if err != nil {
		t.Fatalf("migration failed: %v", err)
	}
	if !slices.Equal(w.log, successCalls) {
		t.Errorf("calls\n got %v\nwant %v", w.log, successCalls)
	}
	var phases []Phase
	for _, p := range rep.Phases {
		phases = append(phases, p.Name)
	}
	if want := []Phase{Preflight, Quiesce, Checkpoint, Transfer, Restore, Resume, Verify, Commit}; !slices.Equal(phases, want) {
		t.Errorf("phases %v, want %v", phases, want)
	}
	if src, tgt := w.copies(); src || !tgt || !w.srcRemoved || !w.committed || !w.copyResumed {
		t.Errorf("after commit: source runs %v, removed %v; target runs %v, committed %v, resumed %v", src, w.srcRemoved, tgt, w.committed, w.copyResumed)
	}
	if rep.Result != Committed || len(rep.Undo) != 0 || rep.Session != "s1" || rep.Downtime <= 0 {
		t.Errorf("report: result %q, undo %v, session %q, downtime %v", rep.Result, rep.Undo, rep.Session, rep.Downtime)
	}
	if c := rep.BoundaryCheck; c == nil || !c.Resumed || !c.ResumedMatch {
		t.Errorf("boundary check %+v: want resumed at the boundary", c)
	}
}

// The undos, by name.
const (
	undoAbort = undoAbortTarget
	undoHook  = "tell the source application to carry on"
	undoLabel = "clear the source's migration label"
	undoThaw  = "thaw the source"
)

// TestPipelineRollsBack fails every call of the pipeline in turn and checks which phase
// failed, the exact undo sequence, and that exactly one copy runs afterwards: the source,
// thawed, unlabelled, its application carrying on, with nothing left on the target.
func TestPipelineRollsBack(t *testing.T) {
	for _, tc := range []struct {
		fail  string
		phase Phase
		undo  []string
	}{
		{"source.Running", Preflight, nil},
		{"target.Hello", Preflight, nil},
		{"source.CPUInfo", Preflight, nil},
		{"target.CheckCPU", Preflight, nil},
		{"target.Open", Preflight, []string{undoAbort}},
		{"hook.Prepare", Quiesce, []string{undoHook, undoAbort}},
		{"source.SetMigrating", Checkpoint, []string{undoLabel, undoHook, undoAbort}},
		{"source.Freeze", Checkpoint, []string{undoLabel, undoHook, undoAbort}},
		{"source.Checkpoint", Checkpoint, []string{undoThaw, undoLabel, undoHook, undoAbort}},
		{"target.Missing", Transfer, []string{undoThaw, undoLabel, undoHook, undoAbort}},
		{"target.PutDir", Transfer, []string{undoThaw, undoLabel, undoHook, undoAbort}},
		// From the restore on, a copy may run on the target: it goes before the source thaws.
		{"target.Restore", Restore, []string{undoAbort, undoThaw, undoLabel, undoHook}},
		{"hook.Resume", Resume, []string{undoAbort, undoThaw, undoLabel, undoHook}},
		{"target.Verify", Verify, []string{undoAbort, undoThaw, undoLabel, undoHook}},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			w := newWorld(t)
			w.fail[tc.fail] = errInjected
			rep, err := w.run(t, Options{})
			var pe *PhaseError
			if !errors.As(err, &pe) || pe.Phase != tc.phase || !errors.Is(err, errInjected) {
				t.Fatalf("error %v: want the injected failure in phase %s", err, tc.phase)
			}
			var undone []string
			for _, u := range rep.Undo {
				undone = append(undone, u.Name)
				if u.Error != "" {
					t.Errorf("undo %q failed: %s", u.Name, u.Error)
				}
			}
			if !slices.Equal(undone, tc.undo) {
				t.Errorf("undo sequence\n got %q\nwant %q", undone, tc.undo)
			}
			if rep.Result != RolledBack {
				t.Errorf("result %q, want %q", rep.Result, RolledBack)
			}
			if last := rep.Phases[len(rep.Phases)-1]; last.Name != Rollback || last.Error != "" {
				t.Errorf("last phase %+v: want a clean rollback", last)
			}
			src, tgt := w.copies()
			if !src || tgt || w.sessionOpen || w.srcLabel != "" || w.prepared || w.srcRemoved {
				t.Errorf("after rollback: source runs %v (label %q, prepared %v, removed %v); target runs %v, session open %v",
					src, w.srcLabel, w.prepared, w.srcRemoved, tgt, w.sessionOpen)
			}
			if slices.Contains(w.log, "source.Checkpoint") && !slices.Contains(w.log, "source.DeleteCheckpoint") {
				t.Error("the checkpoint image was not deleted")
			}
		})
	}
}

// TestPipelineCommitFailures: past verify nothing rolls back. A target that does not confirm the
// commit leaves the source frozen and labelled for recover, and the migration fails; a source
// that cannot be removed after the commit is a warning.
func TestPipelineCommitFailures(t *testing.T) {
	t.Run("target.Commit", func(t *testing.T) {
		w := newWorld(t)
		w.fail["target.Commit"] = errInjected
		rep, err := w.run(t, Options{})
		if !errors.Is(err, errInjected) || rep.Result != CommitUnconfirmed || len(rep.Undo) != 0 {
			t.Fatalf("result %q, undo %v, err %v: want %q, no undo, the injected error", rep.Result, rep.Undo, err, CommitUnconfirmed)
		}
		if !w.srcFrozen || w.srcRemoved || w.srcLabel != "fog:7443" || !w.copyRunning {
			t.Errorf("source frozen %v removed %v label %q; target runs %v: want the source frozen and labelled, the copy running", w.srcFrozen, w.srcRemoved, w.srcLabel, w.copyRunning)
		}
		if !strings.Contains(err.Error(), "ftwin-migrate recover twin") {
			t.Errorf("error %q does not name the recover command", err)
		}
	})
	t.Run("source.Remove", func(t *testing.T) {
		w := newWorld(t)
		w.fail["source.Remove"] = errInjected
		rep, err := w.run(t, Options{})
		if err != nil || rep.Result != Committed || len(rep.Warnings) == 0 || !strings.Contains(strings.Join(rep.Warnings, "\n"), errInjected.Error()) {
			t.Fatalf("result %q, warnings %q, err %v: want committed with a warning", rep.Result, rep.Warnings, err)
		}
		if !w.srcFrozen || !w.committed {
			t.Errorf("source frozen %v, target committed %v", w.srcFrozen, w.committed)
		}
	})
}

// TestRollbackFailureIsReported: an undo that fails never yields ROLLED BACK; the other undos
// still run and the error names the recover command.
func TestRollbackFailureIsReported(t *testing.T) {
	w := newWorld(t)
	w.fail["target.Verify"] = errInjected
	w.fail["source.Thaw"] = errors.New("freezer stuck")
	rep, err := w.run(t, Options{})
	if rep.Result != RollbackFailed {
		t.Errorf("result %q, want %q", rep.Result, RollbackFailed)
	}
	if err == nil || !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "freezer stuck") || !strings.Contains(err.Error(), "ftwin-migrate recover twin") {
		t.Errorf("error %v: want the cause, the failed thaw and the recover command", err)
	}
	var ran []string
	for _, u := range rep.Undo {
		ran = append(ran, u.Name)
	}
	if want := []string{undoAbort, undoThaw, undoLabel, undoHook}; !slices.Equal(ran, want) {
		t.Errorf("undos %q, want all of %q", ran, want)
	}
	if last := rep.Phases[len(rep.Phases)-1]; last.Name != Rollback || last.Error == "" {
		t.Errorf("last phase %+v: want a failed rollback", last)
	}
}

// TestUnconfirmedSessionAbortIsAWarning: before the restore the target holds only blobs, so an
// agent that cannot be told to abort (killed, say) is a warning, not a failed rollback.
func TestUnconfirmedSessionAbortIsAWarning(t *testing.T) {
	w := newWorld(t)
	w.fail["target.PutDir"] = errInjected
	w.fail["target.Abort"] = errors.New("connection refused")
	rep, err := w.run(t, Options{})
	if !errors.Is(err, errInjected) || rep.Result != RolledBack {
		t.Fatalf("result %q, err %v: want rolled back", rep.Result, err)
	}
	if !strings.Contains(strings.Join(rep.Warnings, "\n"), "connection refused") {
		t.Errorf("warnings %q do not mention the failed abort", rep.Warnings)
	}
	if src, _ := w.copies(); !src {
		t.Error("the source does not run")
	}
}

// TestThawDoesNotStarveBehindRemoteAbort: the target's abort hangs (an agent behind a dead
// link); it gets a short timeout of its own, the source waits out the agent's heartbeat
// deadline — past which the agent kills its uncommitted copy itself — asks again, and thaws.
func TestThawDoesNotStarveBehindRemoteAbort(t *testing.T) {
	w := newWorld(t)
	w.fail["target.Verify"] = errInjected
	w.block["target.Abort"] = true
	w.agentKillsQuietCopy = true
	start := time.Now()
	rep, _ := w.run(t, Options{RemoteUndoTimeout: 50 * time.Millisecond, LocalUndoTimeout: time.Second, PhaseTimeout: time.Second})
	if time.Since(start) > 5*time.Second {
		t.Errorf("rollback took %v", time.Since(start))
	}
	if src, tgt := w.copies(); !src || tgt {
		t.Errorf("source runs %v, target runs %v: want the source only", src, tgt)
	}
	if rep.Result != RolledBack || rep.Downtime <= 0 {
		t.Errorf("result %q, downtime %v: want rolled back, with the downtime ending at the thaw", rep.Result, rep.Downtime)
	}
}

// TestHeartbeatsWhileACopyRunsUncommitted: from the restore on, the migrator heartbeats (here
// every 10 ms, a quarter of the agent's 40 ms deadline) while verify takes its time.
func TestHeartbeatsWhileACopyRunsUncommitted(t *testing.T) {
	w := newWorld(t)
	w.block["target.Verify"] = true
	w.agentKillsQuietCopy = true
	w.run(t, Options{PhaseTimeout: 200 * time.Millisecond})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.heartbeats < 3 {
		t.Errorf("%d heartbeats in 200 ms of verify, want several", w.heartbeats)
	}
}

// TestSourceStaysFrozenWhileACopyMayRun: the target can neither abort nor say its copy is gone
// (unreachable): thawing could make two copies, so the source stays frozen and labelled, the
// rollback fails and names recover.
func TestSourceStaysFrozenWhileACopyMayRun(t *testing.T) {
	w := newWorld(t)
	w.fail["target.Verify"] = errInjected
	w.fail["target.Abort"] = errors.New("connection refused")
	w.fail["target.CopyGone"] = errors.New("connection refused")
	rep, err := w.run(t, Options{})
	if rep.Result != RollbackFailed || err == nil || !strings.Contains(err.Error(), "ftwin-migrate recover twin") {
		t.Fatalf("result %q, err %v: want a failed rollback naming recover", rep.Result, err)
	}
	if !w.srcFrozen || w.srcLabel == "" || !w.prepared {
		t.Errorf("source frozen %v, label %q, application still prepared %v: want all left for recover", w.srcFrozen, w.srcLabel, w.prepared)
	}
	var skipped []string
	for _, u := range rep.Undo {
		if u.Skipped {
			skipped = append(skipped, u.Name)
		}
	}
	if want := []string{undoThaw, undoLabel, undoHook}; !slices.Equal(skipped, want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}
}

// TestPhaseTimeout: a phase that hangs is cut at the phase timeout and rolled back.
func TestPhaseTimeout(t *testing.T) {
	w := newWorld(t)
	w.block["target.Restore"] = true
	rep, err := w.run(t, Options{PhaseTimeout: 50 * time.Millisecond})
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != Restore || !strings.Contains(err.Error(), "phase timeout 50ms") {
		t.Fatalf("error %v: want a restore phase timeout", err)
	}
	if rep.Result != RolledBack || w.srcFrozen {
		t.Errorf("result %q, source frozen %v", rep.Result, w.srcFrozen)
	}
}

// TestHookModes: without a hook nothing is prepared or resumed and the report says no boundary
// was taken; HookRequired refuses a container without one before anything happens to it.
func TestHookModes(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		w := newWorld(t)
		rep, err := w.run(t, Options{HookMode: HookOff})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(w.log, "hook.Prepare") || rep.Boundary != nil || rep.BoundaryCheck != nil {
			t.Errorf("hook called or boundary reported: calls %v, boundary %+v", w.log, rep.Boundary)
		}
		if !strings.Contains(strings.Join(rep.Warnings, "\n"), "no boundary was taken") {
			t.Errorf("warnings %q do not say that no boundary was taken", rep.Warnings)
		}
	})
	t.Run("required without a hook", func(t *testing.T) {
		w := newWorld(t)
		// The fake source's pid has no /proc entry here: it serves no hook socket.
		o := Options{HookMode: HookRequired, HookSocket: "/run/ftwin-migrate/hook.sock"}
		o.Container, o.Target = "twin", "fog:7443"
		rep, err := Run(context.Background(), fakeSource{w}, fakeTarget{w}, o)
		if err == nil || !strings.Contains(err.Error(), "serves no migration hook") {
			t.Fatalf("error %v: want a refusal", err)
		}
		if slices.Contains(w.log, "target.Open") || slices.Contains(w.log, "source.Freeze") || rep.Result != RolledBack {
			t.Errorf("calls %v, result %q: want a refusal before the session opens", w.log, rep.Result)
		}
	})
	t.Run("resumed elsewhere", func(t *testing.T) {
		w := newWorld(t)
		rep, err := w.run(t, Options{Hook: offsetHook{fakeHook{w}, kafkahooks.Offsets{"sensors": {0: 7}}}})
		if err == nil || !strings.Contains(err.Error(), "not at the boundary") || rep.BoundaryCheck.ResumedMatch {
			t.Fatalf("err %v, check %+v: want a mismatch", err, rep.BoundaryCheck)
		}
		if src, tgt := w.copies(); !src || tgt {
			t.Errorf("source runs %v, target runs %v", src, tgt)
		}
	})
}

// offsetHook resumes at other offsets than its boundary.
type offsetHook struct {
	fakeHook
	at kafkahooks.Offsets
}

func (h offsetHook) Resume(ctx context.Context, rt http.RoundTripper) (kafkahooks.Offsets, error) {
	_, err := h.fakeHook.Resume(ctx, rt)
	return h.at, err
}

func TestUndoStackMovesARepushedUndoToTheTop(t *testing.T) {
	var s undoStack
	var ran []string
	for _, n := range []string{"a", "b", "c", "a"} {
		s.push(n, Preflight, local, required, func(context.Context) error { ran = append(ran, n); return nil })
	}
	rep := s.unwind(context.Background(), time.Second, time.Second)
	if want := []string{"a", "c", "b"}; !slices.Equal(ran, want) || len(rep) != 3 {
		t.Errorf("ran %v (%d reports), want %v", ran, len(rep), want)
	}
}

// TestCopyThatDiesInTheSettleWindowRollsBack: a copy that runs at the first verify and has
// exited by the end of the settle window is not committed; the source carries on.
func TestCopyThatDiesInTheSettleWindowRollsBack(t *testing.T) {
	w := newWorld(t)
	w.copyDiesAfterVerify = true
	rep, err := w.run(t, Options{HookMode: HookOff, Settle: 5 * time.Millisecond})
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != Verify || !strings.Contains(err.Error(), "settle window") {
		t.Fatalf("err %v: want a verify failure in the settle window", err)
	}
	if src, tgt := w.copies(); !src || tgt || rep.Result != RolledBack {
		t.Errorf("result %q; source runs %v, target runs %v", rep.Result, src, tgt)
	}
}

// TestCommittedUnverified: with neither a hook nor a probe nothing shows the copy works
// beyond its task running, and the result says so.
func TestCommittedUnverified(t *testing.T) {
	w := newWorld(t)
	rep, err := w.run(t, Options{HookMode: HookOff})
	if err != nil || rep.Result != CommittedUnverified {
		t.Fatalf("result %q, err %v: want %q", rep.Result, err, CommittedUnverified)
	}
	w = newWorld(t)
	w.probe = "ok"
	rep, err = w.run(t, Options{HookMode: HookOff, Probe: "http://127.0.0.1:8080/healthz"})
	if err != nil || rep.Result != Committed || !slices.Contains(rep.Evidence, "the probe http://127.0.0.1:8080/healthz passed") {
		t.Fatalf("result %q, evidence %q, err %v: want committed on the probe's evidence", rep.Result, rep.Evidence, err)
	}
}

// TestPhaseProgress: Options.PhaseProgress hears each phase start and end, in order, the
// rollback included, with the ends equal to what the report records.
func TestPhaseProgress(t *testing.T) {
	for _, tc := range []struct {
		fail string
		want []Phase
	}{
		{"", []Phase{Preflight, Quiesce, Checkpoint, Transfer, Restore, Resume, Verify, Commit}},
		{"target.Restore", []Phase{Preflight, Quiesce, Checkpoint, Transfer, Restore, Rollback}},
	} {
		t.Run("fail "+tc.fail, func(t *testing.T) {
			w := newWorld(t)
			if tc.fail != "" {
				w.fail[tc.fail] = errInjected
			}
			var heard []string
			var ends []PhaseReport
			rep, _ := w.run(t, Options{PhaseProgress: func(p PhaseReport, done bool) {
				if done {
					ends = append(ends, p)
					heard = append(heard, string(p.Name)+" done")
				} else {
					heard = append(heard, string(p.Name)+" start")
				}
			}})
			var want []string
			for _, p := range tc.want {
				want = append(want, string(p)+" start", string(p)+" done")
			}
			if !slices.Equal(heard, want) {
				t.Errorf("heard\n %v\nwant\n %v", heard, want)
			}
			if !slices.Equal(ends, rep.Phases) {
				t.Errorf("ends %+v, report %+v", ends, rep.Phases)
			}
		})
	}
}

// holdHook is the hook of an application with capability hold (protocol 3); resumeErr is what
// its resume answers.
type holdHook struct {
	fakeHook
	resumeErr error
}

func (h holdHook) Prepare(ctx context.Context) (*kafkahooks.Boundary, error) {
	b, err := h.fakeHook.Prepare(ctx)
	if b != nil {
		b.Capabilities = []string{kafkahooks.CapHold}
	}
	return b, err
}

func (h holdHook) Resume(ctx context.Context, rt http.RoundTripper) (kafkahooks.Offsets, error) {
	if h.resumeErr != nil {
		h.log = append(h.log, "hook.Resume")
		return nil, h.resumeErr
	}
	return h.fakeHook.Resume(ctx, rt)
}

// TestHoldCopyIsKeptOnceResumed: for an application with capability hold, a failure after the
// copy was told to resume keeps the copy (the target commits it) and never thaws the source;
// a resume the copy answers 409 (it stays held) rolls back as before; a failure before the
// resume too.
func TestHoldCopyIsKeptOnceResumed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		resumeErr error
		fail      string
		kept      bool
	}{
		{"resume answer lost", errors.New("connection reset"), "", true},
		{"verify fails after the resume", nil, "target.Verify", true},
		{"the copy stays held (409)", &kafkahooks.Error{Op: "resume", StatusCode: 409, Message: "moved past the boundary"}, "", false},
		{"restore fails", nil, "target.Restore", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			if tc.fail != "" {
				w.fail[tc.fail] = errInjected
			}
			rep, err := w.run(t, Options{Hook: holdHook{fakeHook{w}, tc.resumeErr}})
			if err == nil {
				t.Fatal("the migration succeeded")
			}
			if tc.kept {
				if rep.Result != RollbackFailed || !w.srcFrozen || !w.copyRunning || !w.committed || !strings.Contains(err.Error(), "never thawed") {
					t.Errorf("result %q, source frozen %v, copy runs %v, committed %v, err %v: want the copy kept and committed, the source frozen", rep.Result, w.srcFrozen, w.copyRunning, w.committed, err)
				}
				if slices.Contains(w.log, "source.Thaw") || slices.Contains(w.log, "hook.Abort") {
					t.Errorf("the source was thawed or told to carry on: %v", w.log)
				}
				return
			}
			if src, tgt := w.copies(); rep.Result != RolledBack || !src || tgt || w.committed {
				t.Errorf("result %q, source runs %v, copy runs %v, committed %v: want a clean rollback", rep.Result, src, tgt, w.committed)
			}
		})
	}
}
