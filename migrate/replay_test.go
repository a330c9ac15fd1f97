package migrate

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
)

// replayHook is the application of a replay migration, faked over the world: the source
// prepares, is released, and holds while prepared; the restored copy becomes a shadow whose
// lag falls by one step per status, advances, and takes over.
type replayHook struct {
	*world
	protocol     int
	caps         []string
	lags         []int64 // the shadow's lag, status by status (the last repeats)
	sourceDigest string
	copyDigest   string
	// tookOverAnyway: the takeover fails to answer, but the copy did take over.
	tookOverAnyway bool
	// dieAtCutover: the source's task dies as the cutover's prepare reaches it.
	dieAtCutover bool
	shadow       bool
	tookOver     bool
	statusCalls  int
}

func newReplayHook(w *world) *replayHook {
	return &replayHook{world: w, protocol: 2, caps: []string{kafkahooks.CapReplay}, lags: []int64{800, 120, 0}, sourceDigest: "d", copyDigest: "d"}
}

var cutoverBoundary = kafkahooks.Offsets{"sensors": {0: 180, 1: 150}}

func (h *replayHook) Prepare(ctx context.Context) (*kafkahooks.Boundary, error) {
	if h.shadow && h.dieAtCutover {
		h.dieAfter, h.runningCalls = 1, 1
		h.log = append(h.log, "hook.Prepare")
		return nil, errors.New("hook socket gone")
	}
	if err := h.call(ctx, "hook.Prepare"); err != nil {
		return nil, err
	}
	offs := boundary
	if h.shadow {
		offs = cutoverBoundary
	}
	h.prepared = true
	return &kafkahooks.Boundary{Protocol: 2, Group: "twin", Offsets: offs, Digest: h.sourceDigest}, nil
}
func (h *replayHook) Release(ctx context.Context) error {
	if err := h.call(ctx, "hook.Release"); err != nil {
		return err
	}
	h.prepared = false
	return nil
}
func (h *replayHook) Abort(ctx context.Context) error {
	h.t.Error("a replay migration called abort on the source")
	return nil
}
func (h *replayHook) Status(ctx context.Context) (kafkahooks.Status, error) {
	return kafkahooks.Status{Protocol: h.protocol, State: kafkahooks.StateRunning, Capabilities: h.caps}, h.call(ctx, "hook.Status")
}
func (h *replayHook) Shadow(ctx context.Context, _ http.RoundTripper) (kafkahooks.Offsets, error) {
	if err := h.call(ctx, "hook.Shadow"); err != nil {
		return nil, err
	}
	h.shadow = true
	return boundary, nil
}
func (h *replayHook) ShadowStatus(ctx context.Context, _ http.RoundTripper) (kafkahooks.Status, error) {
	h.log = append(h.log, "hook.ShadowStatus")
	if err := h.fail["hook.ShadowStatus"]; err != nil {
		return kafkahooks.Status{}, err
	}
	lag := h.lags[min(h.statusCalls, len(h.lags)-1)]
	h.statusCalls++
	st := kafkahooks.State(kafkahooks.StateShadow)
	if h.tookOver {
		st = kafkahooks.StateRunning
	}
	return kafkahooks.Status{Protocol: 2, State: st, Lag: lag, Limit: cutoverBoundary, Replayed: 100}, nil
}
func (h *replayHook) Advance(ctx context.Context, _ http.RoundTripper, to kafkahooks.Offsets) (kafkahooks.Advanced, error) {
	if err := h.call(ctx, "hook.Advance"); err != nil {
		return kafkahooks.Advanced{}, err
	}
	return kafkahooks.Advanced{Protocol: 2, Offsets: to, Digest: h.copyDigest}, nil
}
func (h *replayHook) Resume(ctx context.Context, _ http.RoundTripper) (kafkahooks.Offsets, error) {
	err := h.call(ctx, "hook.Resume")
	if err == nil || h.tookOverAnyway {
		h.tookOver, h.copyResumed = true, true
	}
	if err != nil {
		return nil, err
	}
	return cutoverBoundary, nil
}

// working says which copies work: the source when it runs and is not held at a boundary, the
// target's copy once it took over.
func (h *replayHook) working() (source, target bool) {
	return !h.srcFrozen && !h.srcRemoved && !h.prepared && !h.sourceDead, h.copyRunning && h.tookOver
}

func (h *replayHook) run(t *testing.T, o Options) (*Report, error) {
	t.Helper()
	o.Mode, o.Hook = ModeReplay, h
	if o.CatchUpPoll == 0 {
		o.CatchUpPoll = time.Millisecond
	}
	return h.world.run(t, o)
}

var replaySuccessCalls = []string{
	"source.Running", "target.Hello", "source.CPUInfo", "target.CheckCPU", "hook.Status", "target.Open", // preflight
	"source.SetMigrating", "hook.Prepare", "source.Freeze", "source.Checkpoint", "source.Thaw", "hook.Release", // snapshot
	"target.Missing", "target.PutDir", // transfer
	"target.Restore", "hook.Shadow", // restore, as a shadow
	"hook.ShadowStatus", "source.Running", "hook.ShadowStatus", "source.Running", "hook.ShadowStatus", "source.Running", // catch-up: lag 800, 120, 0
	"hook.Prepare", "hook.Advance", "target.Verify", "hook.Resume", // cutover
	"target.Commit", "source.Remove", // commit
	"source.DeleteCheckpoint",
}

func TestReplayCommits(t *testing.T) {
	h := newReplayHook(newWorld(t))
	var seen []int64
	rep, err := h.run(t, Options{MaxLag: 100, CatchUpProgress: func(s kafkahooks.Status) { seen = append(seen, s.Lag) }})
	if err != nil {
		t.Fatalf("migration failed: %v", err)
	}
	if !slices.Equal(h.log, replaySuccessCalls) {
		t.Errorf("calls\n got %v\nwant %v", h.log, replaySuccessCalls)
	}
	var phases []Phase
	for _, p := range rep.Phases {
		phases = append(phases, p.Name)
	}
	if want := []Phase{Preflight, Snapshot, Transfer, Restore, CatchUp, Cutover, Commit}; !slices.Equal(phases, want) {
		t.Errorf("phases %v, want %v", phases, want)
	}
	if src, tgt := h.working(); src || !tgt || !h.srcRemoved || !h.committed {
		t.Errorf("after commit: source works %v, removed %v; copy works %v, committed %v", src, h.srcRemoved, tgt, h.committed)
	}
	if h.srcFrozen {
		t.Error("a replay migration left the source frozen")
	}
	r := rep.Replay
	if rep.Result != Committed || rep.Mode != "replay" || r == nil || !r.TookOver || r.SourceDigest != "d" || r.CopyDigest != "d" ||
		!r.CutoverBoundary.Equal(cutoverBoundary) || r.SnapshotPause <= 0 || r.CutoverPause <= 0 || rep.Downtime != max(r.SnapshotPause, r.CutoverPause) {
		t.Errorf("report: result %q mode %q replay %+v downtime %v", rep.Result, rep.Mode, r, rep.Downtime)
	}
	if !slices.Equal(seen, []int64{800, 120, 0}) {
		t.Errorf("progress saw lags %v", seen)
	}
}

// TestReplayRollsBack fails each step of a replay migration before the takeover: the shadow
// goes, the source carries on (released, never frozen), and no abort (re-initialisation)
// reaches it.
func TestReplayRollsBack(t *testing.T) {
	const undoRelease = undoHook
	for _, tc := range []struct {
		name  string
		setup func(*replayHook)
		phase Phase
		undo  []string
		msg   string
	}{
		{"prepare fails", func(h *replayHook) { h.fail["hook.Prepare"] = errInjected }, Snapshot, []string{undoRelease, undoLabel, undoAbort}, ""},
		{"checkpoint fails", func(h *replayHook) { h.fail["source.Checkpoint"] = errInjected }, Snapshot, []string{undoThaw, undoRelease, undoLabel, undoAbort}, ""},
		{"freeze fails", func(h *replayHook) { h.fail["source.Freeze"] = errInjected }, Snapshot, []string{undoRelease, undoLabel, undoAbort}, ""},
		{"transfer cut", func(h *replayHook) { h.fail["target.PutDir"] = errInjected }, Transfer, []string{undoRelease, undoLabel, undoAbort}, ""},
		{"shadow restore fails", func(h *replayHook) { h.fail["target.Restore"] = errInjected }, Restore, []string{undoAbort, undoRelease, undoLabel}, ""},
		{"shadow refused", func(h *replayHook) { h.fail["hook.Shadow"] = errInjected }, Restore, []string{undoAbort, undoRelease, undoLabel}, ""},
		{"catch-up timeout", func(h *replayHook) { h.lags = []int64{5000} }, CatchUp, []string{undoAbort, undoRelease, undoLabel}, "did not catch up"},
		{"digest mismatch", func(h *replayHook) { h.copyDigest = "other" }, Cutover, []string{undoRelease, undoAbort, undoLabel}, "not deterministic"},
		{"advance fails", func(h *replayHook) { h.fail["hook.Advance"] = errInjected }, Cutover, []string{undoRelease, undoAbort, undoLabel}, ""},
		{"takeover refused, still a shadow", func(h *replayHook) { h.fail["hook.Resume"] = errInjected }, Cutover, []string{undoRelease, undoAbort, undoLabel}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newReplayHook(newWorld(t))
			tc.setup(h)
			rep, err := h.run(t, Options{CatchUpTimeout: 50 * time.Millisecond})
			var pe *PhaseError
			if !errors.As(err, &pe) || pe.Phase != tc.phase {
				t.Fatalf("error %v: want a failure in phase %s", err, tc.phase)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			var undone []string
			for _, u := range rep.Undo {
				undone = append(undone, u.Name)
			}
			if !slices.Equal(undone, tc.undo) {
				t.Errorf("undo %v, want %v", undone, tc.undo)
			}
			if rep.Result != RolledBack {
				t.Errorf("result %q, want %q", rep.Result, RolledBack)
			}
			if src, tgt := h.working(); !src || tgt || h.copyRunning || h.srcLabel != "" || h.srcFrozen {
				t.Errorf("after rollback: source works %v (frozen %v, label %q), copy works %v, runs %v", src, h.srcFrozen, h.srcLabel, tgt, h.copyRunning)
			}
		})
	}
}

// TestReplayTakeoverUnknown: a takeover that fails to answer while the copy did take over is
// not rolled back (the copy may own the work): the source holds, labelled, for recover.
func TestReplayTakeoverUnknown(t *testing.T) {
	h := newReplayHook(newWorld(t))
	h.fail["hook.Resume"] = errInjected
	h.tookOverAnyway = true
	rep, err := h.run(t, Options{})
	if err == nil || !strings.Contains(err.Error(), "recover twin") {
		t.Fatalf("error %v: want one naming recover", err)
	}
	if rep.Result != CommitUnconfirmed || len(rep.Undo) != 0 {
		t.Errorf("result %q undo %v: want %q and nothing undone", rep.Result, rep.Undo, CommitUnconfirmed)
	}
	if src, tgt := h.working(); src || !tgt || h.srcLabel == "" {
		t.Errorf("source works %v (label %q), copy works %v: want only the copy, the source labelled", src, h.srcLabel, tgt)
	}
}

// TestReplaySourceDies: the source's task is gone during the catch-up: the shadow takes over
// from the log, without a cutover boundary or digests.
func TestReplaySourceDies(t *testing.T) {
	h := newReplayHook(newWorld(t))
	h.lags = []int64{5000}
	h.dieAfter = 2
	rep, err := h.run(t, Options{})
	if err != nil {
		t.Fatalf("migration failed: %v", err)
	}
	if !rep.Replay.SourceDied || !rep.Replay.TookOver || slices.Contains(h.log[slices.Index(h.log, "hook.Shadow"):], "hook.Advance") {
		t.Errorf("replay %+v, calls %v", rep.Replay, h.log)
	}
	if _, tgt := h.working(); !tgt || !h.committed {
		t.Errorf("copy works %v, committed %v", tgt, h.committed)
	}
}

// TestReplaySourceDiesAtCutover: the source dies as the cutover reaches it: the shadow takes
// over from the log instead of a rollback to a source that is gone.
func TestReplaySourceDiesAtCutover(t *testing.T) {
	h := newReplayHook(newWorld(t))
	h.dieAtCutover = true
	rep, err := h.run(t, Options{})
	if err != nil {
		t.Fatalf("migration failed: %v", err)
	}
	if !rep.Replay.SourceDied || !rep.Replay.TookOver || slices.Contains(h.log, "hook.Advance") || !h.committed {
		t.Errorf("replay %+v, committed %v, calls %v", rep.Replay, h.committed, h.log)
	}
}

// TestReplayRefusesVersion1: an application whose hook cannot replay is refused in the
// preflight, before anything is opened, with the way out named.
func TestReplayRefusesVersion1(t *testing.T) {
	for name, setup := range map[string]func(*replayHook){
		"protocol 1":    func(h *replayHook) { h.protocol, h.caps = 1, nil },
		"no capability": func(h *replayHook) { h.caps = nil },
	} {
		t.Run(name, func(t *testing.T) {
			h := newReplayHook(newWorld(t))
			setup(h)
			rep, err := h.run(t, Options{})
			var pe *PhaseError
			if !errors.As(err, &pe) || pe.Phase != Preflight || !strings.Contains(err.Error(), "--mode stop-and-copy") {
				t.Fatalf("error %v: want a preflight refusal naming stop-and-copy", err)
			}
			if slices.Contains(h.log, "target.Open") || rep.Result != RolledBack {
				t.Errorf("calls %v, result %q", h.log, rep.Result)
			}
		})
	}
}

// TestRollbackWhenCopyCommitted: stop-and-copy's rollback reads the group's committed offsets
// before it removes the copy; offsets past the boundary mean the copy owns the work: it stays,
// the source stays frozen, and the rollback fails naming recover.
func TestRollbackWhenCopyCommitted(t *testing.T) {
	for name, moved := range map[string]bool{"offsets at the boundary": false, "offsets moved on": true} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.fail["target.Verify"] = errInjected
			o := Options{committed: func(context.Context, string) (kafkahooks.Offsets, error) {
				if moved && slices.Contains(w.log, "hook.Resume") {
					return kafkahooks.Offsets{"sensors": {0: 130, 1: 98}}, nil
				}
				return boundary, nil
			}}
			rep, err := w.run(t, o)
			if err == nil {
				t.Fatal("migration succeeded")
			}
			src, tgt := w.copies()
			if !moved {
				if rep.Result != RolledBack || !src || tgt {
					t.Fatalf("result %q, source runs %v, copy runs %v: want a rollback to the source", rep.Result, src, tgt)
				}
				return
			}
			if rep.Result != RollbackFailed || src || !tgt || !strings.Contains(err.Error(), "owns the work") || !strings.Contains(err.Error(), "recover twin") {
				t.Fatalf("result %q (%v), source runs %v, copy runs %v: want the copy kept, the source frozen, recover named", rep.Result, err, src, tgt)
			}
		})
	}
}

// progressHook is the stop-and-copy hook whose restored copy reports its committed offsets.
type progressHook struct {
	fakeHook
	copyAt kafkahooks.Offsets
}

func (h progressHook) ShadowStatus(ctx context.Context, _ http.RoundTripper) (kafkahooks.Status, error) {
	return kafkahooks.Status{Protocol: 2, State: kafkahooks.StateRunning, Offsets: h.copyAt}, h.call(ctx, "hook.CopyStatus")
}

// TestCommitOnlyWhatWorks: after the settle window the resumed copy must have committed past
// the boundary, or the broker must show nothing waiting; a copy that sits at the boundary
// while records wait is stuck, and the migration rolls back (safe: it committed nothing).
func TestCommitOnlyWhatWorks(t *testing.T) {
	moved := kafkahooks.Offsets{"sensors": {0: 125, 1: 98}}
	for _, tc := range []struct {
		name     string
		copyAt   kafkahooks.Offsets
		ends     kafkahooks.Offsets
		result   string
		evidence string
	}{
		{"progress", moved, moved, Committed, "the copy committed past the boundary after its resume"},
		{"idle input", boundary, boundary, Committed, "no records arrived past the boundary during the settle window (an idle input)"},
		{"stuck", boundary, moved, RolledBack, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			ends := tc.ends
			rep, err := w.run(t, Options{Hook: progressHook{fakeHook{w}, tc.copyAt},
				committed:  func(context.Context, string) (kafkahooks.Offsets, error) { return boundary, nil },
				endOffsets: func(context.Context, kafkahooks.Offsets) (kafkahooks.Offsets, error) { return ends, nil }})
			if rep.Result != tc.result {
				t.Fatalf("result %q (%v), want %q", rep.Result, err, tc.result)
			}
			if tc.evidence != "" && !slices.Contains(rep.Evidence, tc.evidence) {
				t.Errorf("evidence %v lacks %q", rep.Evidence, tc.evidence)
			}
			if tc.result == RolledBack {
				if !strings.Contains(err.Error(), "looks stuck") {
					t.Errorf("error %v does not say the copy looks stuck", err)
				}
				if src, tgt := w.copies(); !src || tgt {
					t.Errorf("source runs %v, copy runs %v", src, tgt)
				}
			}
		})
	}
}
