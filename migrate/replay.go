package migrate

// Replay migration (Options.Mode = ModeReplay): the source keeps working while its copy is
// brought up to date from the Kafka log, and hands over in one short cutover.
//
//	phase       does                                             pushes the undo
//	preflight   as stop-and-copy, and the application's hook     abort the target session
//	            speaks protocol 2 with capability replay
//	snapshot    the source reaches a boundary, is frozen, dumped  clear the label; tell the source
//	            with CRIU leaving it running, thawed and         to carry on (a no-op once it has);
//	            released at once: its only pause                 thaw it
//	transfer    the image streams to the target while the
//	            source works
//	restore     the agent restores the copy, which is told it    abort the target session (the
//	            is a shadow before it can reach a broker: it     copy goes)
//	            replays the log outside the group, emitting
//	            nothing
//	catch-up    the shadow's lag behind the source's committed
//	            offsets falls below MaxLag (or the source died:
//	            the shadow takes over from the log)
//	cutover     the source prepares at B and holds; the shadow   tell the source to carry on
//	            applies up to exactly B; the digests must be
//	            equal; the target sees its copy run; the shadow
//	            takes over (fencing the source)                  (none: past the point of no return)
//	commit      the target keeps the copy; the source is removed
//
// Before the takeover every failure drops the shadow and lets the source carry on: exactly one
// copy works throughout, and the source's pauses are the snapshot's and the cutover's.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
)

// Mode is how a migration moves the application's state.
type Mode int

const (
	// ModeStopAndCopy freezes the source from the dump to the commit: the pause grows with
	// the state and shrinks with the link. Any application. The default.
	ModeStopAndCopy Mode = iota
	// ModeReplay restores a snapshot on the target while the source runs and brings it up to
	// date from the Kafka log: the pauses are the snapshot's and the cutover's, whatever the
	// state and the link. Needs a hook of protocol 2 with capability replay.
	ModeReplay
)

// ParseMode reads a mode as a flag gives it: stop-and-copy or replay.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "stop-and-copy":
		return ModeStopAndCopy, nil
	case "replay":
		return ModeReplay, nil
	}
	return 0, fmt.Errorf("mode %q: want stop-and-copy (freeze, copy, restore: any application) or replay (snapshot, catch up from the Kafka log, cut over: applications whose hook can replay)", s)
}

func (m Mode) String() string { return [...]string{"stop-and-copy", "replay"}[m] }

// The phases of a replay migration that stop-and-copy has not.
const (
	Snapshot Phase = "snapshot"
	CatchUp  Phase = "catch-up"
	Cutover  Phase = "cutover"
)

// ReplayHook is a Hook whose application can be migrated by replay (hook protocol 2).
type ReplayHook interface {
	Hook
	// Status is the source application's status (its protocol and capabilities).
	Status(ctx context.Context) (kafkahooks.Status, error)
	// Release tells the source to carry on after its snapshot, with its clients as they are.
	Release(ctx context.Context) error
	// Shadow tells the restored copy, through target, that it is a shadow, and returns the
	// offsets its replay starts from.
	Shadow(ctx context.Context, target http.RoundTripper) (kafkahooks.Offsets, error)
	// ShadowStatus is the restored copy's status, through target.
	ShadowStatus(ctx context.Context, target http.RoundTripper) (kafkahooks.Status, error)
	// Advance has the shadow apply the records up to exactly to, through target, and returns
	// its digest there.
	Advance(ctx context.Context, target http.RoundTripper, to kafkahooks.Offsets) (kafkahooks.Advanced, error)
}

// ReplayReport is what a replay migration measured.
type ReplayReport struct {
	// SnapshotBoundary is where the snapshot was taken, ShadowFrom where the shadow's replay
	// started (the same, or the shadow was not the snapshot's).
	SnapshotBoundary kafkahooks.Offsets `json:"snapshot_boundary"`
	ShadowFrom       kafkahooks.Offsets `json:"shadow_from,omitempty"`
	// SnapshotPause is the source's pause for its snapshot: from the prepare to the release;
	// SnapshotSteps splits it: prepare, checkpoint (containerd's call: runc, CRIU's dump, the
	// checkpoint's records; CRIU's own frozen time is in the report's CRIU statistics) and
	// release.
	SnapshotPause time.Duration `json:"snapshot_pause_ns"`
	SnapshotSteps []Step        `json:"snapshot_steps,omitempty"`
	// CatchUp is how long the shadow took to come within MaxLag; LagAtCutover its lag then.
	CatchUp      time.Duration `json:"catch_up_ns,omitempty"`
	LagAtCutover int64         `json:"lag_at_cutover_records,omitempty"`
	// Replayed counts the records the shadow applied before it took over.
	Replayed int64 `json:"replayed,omitempty"`
	// CutoverPause is the source's second pause: from its prepare at the cutover boundary to
	// the shadow's takeover answer; CutoverSteps splits it: prepare, advance (the shadow's last
	// records and its digest), verify (the agent sees the copy run), takeover.
	CutoverPause time.Duration `json:"cutover_pause_ns,omitempty"`
	CutoverSteps []Step        `json:"cutover_steps,omitempty"`
	// CutoverBoundary is B; SourceDigest and CopyDigest the digests of the two states there.
	CutoverBoundary kafkahooks.Offsets `json:"cutover_boundary,omitempty"`
	SourceDigest    string             `json:"source_digest,omitempty"`
	CopyDigest      string             `json:"copy_digest,omitempty"`
	// SourceDied: the source's task was gone during the catch-up; the shadow took over from
	// the log (no digest to compare).
	SourceDied bool `json:"source_died,omitempty"`
	// TookOver: the shadow was told to take over (from then on it owns the work).
	TookOver bool `json:"took_over"`
}

// Step is one timed step of a pause.
type Step struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
}

// timed runs fn and appends its duration to steps as name.
func timed(steps *[]Step, name string, fn func() error) error {
	start := time.Now()
	err := fn()
	*steps = append(*steps, Step{Name: name, Duration: time.Since(start)})
	return err
}

// checkReplay refuses, in the preflight, an application that cannot be migrated by replay.
func (m *run) checkReplay(ctx context.Context) error {
	if m.hook == nil {
		return fmt.Errorf("--mode replay needs the application's migration hook, and container %s serves none at %s: run it with kafkahooks (protocol 2), or migrate it with --mode stop-and-copy", m.o.Container, m.o.HookSocket)
	}
	rh, ok := m.hook.(ReplayHook)
	if !ok {
		return errors.New("--mode replay: this migration's hook cannot replay: migrate with --mode stop-and-copy")
	}
	st, err := rh.Status(ctx)
	if err != nil {
		return fmt.Errorf("--mode replay: ask the application what it can do: %w", err)
	}
	if st.Protocol < 2 || !st.Can(kafkahooks.CapReplay) {
		why := fmt.Sprintf("its hook speaks protocol %d", st.Protocol)
		if st.Protocol >= 2 {
			why = fmt.Sprintf("its hook (protocol %d) does not offer capability %q (its processing is not declared deterministic: kafkahooks.LoopConfig.Digest)", st.Protocol, kafkahooks.CapReplay)
		}
		return fmt.Errorf("--mode replay: container %s cannot be migrated by replay: %s; it can still move by stop-and-copy (--mode stop-and-copy, the default)", m.o.Container, why)
	}
	m.replay = rh
	return nil
}

func (m *run) replayPipeline(ctx context.Context) error {
	defer m.cleanup(context.WithoutCancel(ctx))
	defer func() {
		if m.stopHeartbeats != nil {
			m.stopHeartbeats()
		}
	}()
	m.rep.Replay = &ReplayReport{}
	for _, step := range []struct {
		p  Phase
		fn func(context.Context) error
	}{
		{Preflight, m.preflight}, {Snapshot, m.snapshot}, {Transfer, m.transfer},
		{Restore, m.restoreShadow}, {CatchUp, m.catchUp}, {Cutover, m.cutover},
	} {
		if err := m.phase(ctx, step.p, step.fn); err != nil {
			if m.rep.Replay.TookOver {
				// Past the takeover nothing is rolled back: the copy may own the work.
				m.undo = nil
				m.rep.Result = CommitUnconfirmed
				return fmt.Errorf("%w; the copy may have taken over: the source holds at the boundary and stays labelled: run `ftwin-migrate recover %s`", err, m.o.Container)
			}
			return m.rollback(context.WithoutCancel(ctx), err)
		}
	}
	m.undo = nil
	return m.phase(context.WithoutCancel(ctx), Commit, m.commit)
}

// snapshot takes the source's image at a boundary and lets it carry on at once.
func (m *run) snapshot(ctx context.Context) error {
	if err := m.makeCheckpointDirs(); err != nil {
		return err
	}
	m.undo.pushUndo(undo{name: "clear the source's migration label", phase: Snapshot, where: local, need: required,
		fn: func(ctx context.Context) error { return m.src.SetMigrating(ctx, nil) }})
	if err := m.src.SetMigrating(ctx, &Migrating{Target: m.o.Target, WorkDir: m.ckpt.work, Checkpoint: m.ckptRef}); err != nil {
		return err
	}
	start := time.Now()
	m.frozenAt = start
	m.undo.pushUndo(undo{name: "tell the source application to carry on", phase: Snapshot, where: local, need: required, fn: m.releaseSource})
	steps := &m.rep.Replay.SnapshotSteps
	var b *kafkahooks.Boundary
	if err := timed(steps, "prepare", func() (err error) { b, err = m.hook.Prepare(ctx); return err }); err != nil {
		return err
	}
	m.boundary, m.rep.Boundary, m.rep.Replay.SnapshotBoundary = b, b, b.Offsets
	// The broker is asked about the boundary while CRIU dumps (the source holds at the
	// boundary until its release, so the offsets cannot move meanwhile): not in the pause.
	checked := make(chan error, 1)
	go func() { checked <- m.checkCommitted(ctx) }()
	// The dump leaves the task running. It is frozen here first, although CRIU would freeze it
	// itself: CRIU polls the cgroup freezer in steps of 100 ms (4.2: freezing_time 101 ms every
	// time), containerd's pause does not; the task is held at its boundary meanwhile anyway.
	var res *checkpoint.Result
	err := timed(steps, "freeze", func() error { return m.src.Freeze(ctx) })
	if err == nil {
		m.undo.pushUndo(undo{name: "thaw the source", phase: Snapshot, where: local, need: required, fn: m.src.Thaw})
		err = timed(steps, "checkpoint", func() (err error) {
			res, err = m.src.Checkpoint(ctx, m.ckptRef, m.ckpt.work, m.ckpt.image)
			return err
		})
	}
	if err == nil {
		if err = timed(steps, "thaw", func() error { return m.src.Thaw(ctx) }); err == nil {
			m.undo.drop("thaw the source")
		}
	}
	if cerr := <-checked; cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	if err := timed(steps, "release", func() error { return m.replay.Release(ctx) }); err != nil {
		return fmt.Errorf("release the source after its snapshot: %w", err)
	}
	m.rep.Replay.SnapshotPause = time.Since(start)
	m.rep.CheckpointIndex = res.Target.Digest.String()
	m.index = res.Target
	if m.rep.CRIU = res.CRIU; m.rep.CRIU == nil {
		m.rep.Warnings = append(m.rep.Warnings, "CRIU dump statistics unavailable")
	}
	return nil
}

// releaseSource is the undo of a prepare in a replay migration: the source carries on with its
// clients (nothing can have fenced them before the takeover).
func (m *run) releaseSource(ctx context.Context) error { return m.replay.Release(ctx) }

// restoreShadow restores the copy and makes it a shadow.
func (m *run) restoreShadow(ctx context.Context) error {
	if err := m.restore(ctx); err != nil {
		return err
	}
	from, err := m.replay.Shadow(ctx, m.tgt.HookTransport())
	if err != nil {
		return fmt.Errorf("make the restored copy a shadow: %w", err)
	}
	m.rep.Replay.ShadowFrom = from
	if !from.Equal(m.boundary.Offsets) {
		return fmt.Errorf("the shadow replays from %v, not from the snapshot's boundary %v", from, m.boundary.Offsets)
	}
	return nil
}

// catchUp waits until the shadow is within MaxLag of the source, or the source died.
func (m *run) catchUp(ctx context.Context) error {
	start := time.Now()
	defer func() { m.rep.Replay.CatchUp = time.Since(start) }()
	tick := time.NewTicker(m.o.CatchUpPoll)
	defer tick.Stop()
	var last kafkahooks.Status
	var lastErr error
	for {
		st, err := m.replay.ShadowStatus(ctx, m.tgt.HookTransport())
		switch {
		case err != nil:
			lastErr = err
		case st.State != kafkahooks.StateShadow:
			return fmt.Errorf("the restored copy is %s, no longer a shadow", st.State)
		default:
			last, lastErr = st, nil
			if m.o.CatchUpProgress != nil {
				m.o.CatchUpProgress(st)
			}
		}
		if m.sourceGone(ctx) {
			return nil
		}
		// A status read once the deadline has passed does not count: the shadow did not catch
		// up within CatchUpTimeout.
		if ctx.Err() == nil && lastErr == nil && last.Limit.Len() > 0 && last.Lag <= m.o.MaxLag {
			m.rep.Replay.LagAtCutover, m.rep.Replay.Replayed = last.Lag, last.Replayed
			m.rep.addEvidence(fmt.Sprintf("the shadow caught up from the log (%d records replayed, lag %d)", last.Replayed, last.Lag))
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("the shadow did not catch up within %v: %w", m.o.CatchUpTimeout, lastErr)
			}
			return fmt.Errorf("the shadow did not catch up within %v (lag %d records, %v of record time; MaxLag %d): the source carries on", m.o.CatchUpTimeout, last.Lag, last.LagTime, m.o.MaxLag)
		}
	}
}

// sourceGone reports whether the source's task is gone (and records it): the shadow then
// takes over from the log.
func (m *run) sourceGone(ctx context.Context) bool {
	if m.rep.Replay.SourceDied {
		return true
	}
	if _, err := m.src.Running(ctx); err != nil && ctx.Err() == nil {
		m.rep.Replay.SourceDied = true
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("the source died during the migration (%v): the shadow takes over from the log", err))
		return true
	}
	return false
}

// cutover stops the source at B, brings the shadow to B, compares the digests and hands over.
func (m *run) cutover(ctx context.Context) error {
	r := m.rep.Replay
	start := time.Now()
	rt := m.tgt.HookTransport()
	if !r.SourceDied {
		m.undo.pushUndo(undo{name: "tell the source application to carry on", phase: Cutover, where: local, need: required, fn: m.releaseSource})
		var b *kafkahooks.Boundary
		err := timed(&r.CutoverSteps, "prepare", func() (err error) { b, err = m.hook.Prepare(ctx); return err })
		switch {
		case err != nil && !m.sourceGone(ctx):
			return err
		case err == nil:
			r.CutoverBoundary, r.SourceDigest = b.Offsets, b.Digest
			var a kafkahooks.Advanced
			err := timed(&r.CutoverSteps, "advance", func() (err error) { a, err = m.replay.Advance(ctx, rt, b.Offsets); return err })
			if err != nil {
				return fmt.Errorf("bring the shadow to the boundary %v: %w", b.Offsets, err)
			}
			r.CopyDigest = a.Digest
			if a.Digest == "" || a.Digest != b.Digest {
				return fmt.Errorf("the states differ at the boundary %v: source digest %q, copy digest %q: the application's processing is not deterministic (or its digest is not of its state); the source carries on", b.Offsets, b.Digest, a.Digest)
			}
			m.rep.addEvidence("the digests of both states are equal at the boundary")
			m.boundary = b
		}
	}
	var res agent.VerifyResult
	if err := timed(&r.CutoverSteps, "verify", func() (err error) { res, err = m.tgt.Verify(ctx); return err }); err != nil {
		return err
	}
	if !res.Running {
		return fmt.Errorf("the shadow %s is not running on %s", m.o.Container, m.rep.To)
	}
	if m.rep.BoundaryCheck == nil {
		m.rep.BoundaryCheck = &BoundaryCheck{}
	}
	r.TookOver = true
	var at kafkahooks.Offsets
	err := timed(&r.CutoverSteps, "takeover", func() (err error) { at, err = m.hook.Resume(ctx, rt); return err })
	if err != nil {
		// Did the takeover happen? A copy that still says it is a shadow did not take over.
		if st, serr := m.replay.ShadowStatus(ctx, rt); serr == nil && st.State == kafkahooks.StateShadow {
			r.TookOver = false
		}
		return fmt.Errorf("the shadow's takeover: %w", err)
	}
	r.CutoverPause = time.Since(start)
	m.rep.Downtime = max(r.SnapshotPause, r.CutoverPause)
	c := m.rep.BoundaryCheck
	c.Resumed, c.ResumedAt = true, at
	c.ResumedMatch = r.SourceDied || at.Equal(m.boundary.Offsets)
	if !c.ResumedMatch {
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("the copy took over at %v, not at the boundary %v: another consumer committed meanwhile", at, m.boundary.Offsets))
	} else {
		m.rep.addEvidence("the copy took over at the boundary")
	}
	return nil
}
