// Package migrate live-migrates a running containerd container to another host's agent
// (package agent), as a pipeline of named phases. Each phase pushes the undo of what it did on
// a stack; after a failure, rollback pops the undos in reverse order, each under its own
// timeout, so that after every migration exactly one copy runs:
//
//	phase       does                                             pushes the undo
//	preflight   the source task runs; the agent is reachable,     abort the target session
//	            authenticated, speaks our protocol, its CPU can
//	            run our CRIU image, it has room; the session opens
//	quiesce     the application's hook (if any) reaches a         tell the source application
//	            boundary, checked against the broker (--brokers)  to carry on
//	checkpoint  the source is labelled with its target, frozen    clear the label; thaw the source
//	            and dumped with CRIU; it stays frozen
//	transfer    the checkpoint streams over mTLS                  (the session abort removes it)
//	restore     the agent restores the container                  abort the target session, moved
//	                                                              to the top: the copy goes first
//	resume      the restored application is told to continue
//	            from the boundary (through the agent's relay)
//	verify      the restored task runs and passes its probe
//	commit      the target keeps it; the frozen source is removed (no undo: past the point of
//	                                                              no return)
//
// The source side is a Source (containerd: NewContainerdSource) and the target side a Target
// (the agent: NewAgentTarget): Run drives any pair, Migrate the containerd and agent ones.
package migrate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// Phase names a step of the pipeline.
type Phase string

// The phases, in order. Rollback runs instead of Commit after a failure.
const (
	Preflight  Phase = "preflight"
	Quiesce    Phase = "quiesce"
	Checkpoint Phase = "checkpoint"
	Transfer   Phase = "transfer"
	Restore    Phase = "restore"
	Resume     Phase = "resume"
	Verify     Phase = "verify"
	Commit     Phase = "commit"
	Rollback   Phase = "rollback"
)

// Results of a migration (Report.Result).
const (
	// Committed: the target runs the container; the source is gone.
	Committed = "committed"
	// RolledBack: a phase failed and every undo succeeded: the source runs, the target holds
	// nothing of it.
	RolledBack = "rolled back"
	// RollbackFailed: a phase failed and an undo failed too: run Recover (`ftwin-migrate
	// recover CONTAINER`) to settle the container.
	RollbackFailed = "rollback failed"
	// CommittedUnverified: as Committed, but nothing showed the copy works beyond its task
	// running through the settle window (no hook resumed it, no probe was given).
	CommittedUnverified = "committed unverified"
	// CommitUnconfirmed: the target runs the container but did not confirm the commit; the
	// source stays frozen and labelled: run Recover to settle it.
	CommitUnconfirmed = "commit unconfirmed"
)

// Options describe one migration.
type Options struct {
	// Namespace is the containerd namespace of the container. Default "default".
	Namespace string
	// Container is the container id (the same on the target).
	Container string
	// Target is the agent's address, host:port.
	Target string
	// TLS is the migrator's mutual-TLS client configuration (pki.ClientConfig).
	TLS *tls.Config
	// SourceHost names this host in the agent's logs and the report. Default: the hostname.
	SourceHost string
	// TCP says what becomes of established TCP connections on the target. Default: restored
	// established for a container whose address moves with it (Network), closed otherwise.
	TCP restore.TCPMode
	// Network, when set, says whether the container has an address of its own on a network
	// the hosts share, and takes it off the source: the target's agent recreates it (see
	// agent.SessionRequest.Address), so TCP connections carry on. Nil: containers are taken to
	// be on their host's network, and get the target's address. Only stop-and-copy moves an
	// address: a replay's source runs on while its copy is restored.
	Network SourceNetwork
	// Probe is an http:// URL the agent checks on the target before commit (optional).
	Probe string
	// Settle is how long the restored copy must stay alive (and keep passing the probe) before
	// it is committed: an application that dies soon after a restore (one that exits when its
	// broker connections drop, say) rolls back instead. Default 2s; negative: none.
	Settle time.Duration
	// Hook is the application's hook. When nil, HookMode says whether to look for the
	// container's hook socket (HookSocket).
	Hook Hook
	// HookMode: HookAuto (default) uses the container's hook socket when it serves one,
	// HookRequired refuses a container without one, HookOff freezes the application as it is.
	HookMode HookMode
	// HookSocket is the path of the application's hook socket inside the container: a clean
	// absolute path. Default DefaultHookSocket.
	HookSocket string
	// Brokers, when set, let the migrator check the application's boundary against the group's
	// committed offsets on the broker. KafkaOpts are added to the client (a dialer, TLS, SASL).
	Brokers   []string
	KafkaOpts []kgo.Opt
	// SessionTimeout is the consumer group's session timeout, which the application does not
	// report: the preflight warns when the expected downtime approaches it. Default 45s
	// (Kafka's default since 3.0).
	SessionTimeout time.Duration
	// PhaseTimeout bounds each phase. Default 2 minutes.
	PhaseTimeout time.Duration
	// LocalUndoTimeout bounds each undo on the source (thaw, label, hook abort), and
	// RemoteUndoTimeout each undo on the target (session abort): every undo has a context of
	// its own, so a thaw never starves behind an unreachable agent. Defaults 30s and 10s.
	LocalUndoTimeout  time.Duration
	RemoteUndoTimeout time.Duration
	// Progress receives transfer progress (optional).
	Progress transfer.Progress
	// PhaseProgress, when set, is told of each phase as it starts (done false: only Name and
	// Start are set) and as it ends (done true: the PhaseReport the report records, rollback
	// included). It is called on the goroutine that runs the pipeline, so it must not block
	// (the containerd plugin streams these to its client).
	PhaseProgress func(p PhaseReport, done bool)
	// AgentOpts configure the agent client (tests cut or corrupt the traffic here).
	AgentOpts []agent.ClientOpt
	// WorkDir is where the CRIU work directory of the dump is kept for its statistics. It must
	// be visible to the source's containerd. Default: a temporary directory, removed after.
	WorkDir string

	// Mode is ModeStopAndCopy (the default) or ModeReplay (see replay.go): the source keeps
	// working while its copy catches up from the Kafka log; it needs a hook of protocol 2 with
	// capability replay, and is refused in the preflight otherwise.
	Mode Mode
	// MaxLag (replay) is the shadow's lag, in records behind the source's committed offsets,
	// below which the cutover starts: the records the cutover still replays within its pause.
	// Default 500; negative: 0 (caught up exactly).
	MaxLag int64
	// CatchUpTimeout (replay) bounds the catch-up: a shadow not within MaxLag by then is
	// dropped and the source carries on. Default 2 minutes. CatchUpPoll is how often the
	// shadow's status is read (default 100ms), and CatchUpProgress receives it (optional).
	CatchUpTimeout  time.Duration
	CatchUpPoll     time.Duration
	CatchUpProgress func(kafkahooks.Status)

	// committed reads a group's committed offsets, endOffsets the log end offsets of the
	// partitions named (tests fake the broker); default: from Brokers.
	committed  func(ctx context.Context, group string) (kafkahooks.Offsets, error)
	endOffsets func(ctx context.Context, of kafkahooks.Offsets) (kafkahooks.Offsets, error)
}

func (o *Options) setDefaults() {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.PhaseTimeout == 0 {
		o.PhaseTimeout = 2 * time.Minute
	}
	if o.LocalUndoTimeout == 0 {
		o.LocalUndoTimeout = 30 * time.Second
	}
	if o.RemoteUndoTimeout == 0 {
		o.RemoteUndoTimeout = 10 * time.Second
	}
	if o.HookSocket == "" {
		o.HookSocket = DefaultHookSocket
	}
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 45 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 2 * time.Second
	}
	if o.SourceHost == "" {
		o.SourceHost, _ = os.Hostname()
	}
	switch {
	case o.MaxLag == 0:
		o.MaxLag = 500
	case o.MaxLag < 0:
		o.MaxLag = 0
	}
	if o.CatchUpTimeout == 0 {
		o.CatchUpTimeout = 2 * time.Minute
	}
	if o.CatchUpPoll == 0 {
		o.CatchUpPoll = 100 * time.Millisecond
	}
	if o.committed == nil && len(o.Brokers) > 0 {
		o.committed = func(ctx context.Context, group string) (kafkahooks.Offsets, error) {
			return committedOffsets(ctx, o.Brokers, o.KafkaOpts, group)
		}
	}
	if o.endOffsets == nil && len(o.Brokers) > 0 {
		o.endOffsets = func(ctx context.Context, of kafkahooks.Offsets) (kafkahooks.Offsets, error) {
			return endOffsets(ctx, o.Brokers, o.KafkaOpts, of)
		}
	}
}

// Migrate moves container o.Container of client to the agent at o.Target and returns its
// report. The report is returned on failure too, saying which phase failed and what the
// rollback undid.
func Migrate(ctx context.Context, client *containerd.Client, o Options) (*Report, error) {
	if o.TLS == nil {
		return nil, errors.New("migrate: no TLS configuration: the agent only speaks mutual TLS (see `ftwin-migrate certs init`)")
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	ctx = namespaces.WithNamespace(ctx, o.Namespace)
	tgt := NewAgentTarget(o.Target, o.TLS, o.AgentOpts...)
	defer tgt.Close()
	return Run(ctx, NewContainerdSource(client, o.Container), tgt, o)
}

// Run moves the container from src to tgt: the pipeline itself. ctx must carry what src
// needs (for containerd, the namespace).
func Run(ctx context.Context, src Source, tgt Target, o Options) (*Report, error) {
	o.setDefaults()
	m := &run{o: o, src: src, tgt: tgt, rep: &Report{Container: o.Container, From: o.SourceHost, To: o.Target, Mode: o.Mode.String(), Started: time.Now()}}
	var err error
	if o.Mode == ModeReplay {
		err = m.replayPipeline(ctx)
	} else {
		err = m.pipeline(ctx)
	}
	m.rep.Total = time.Since(m.rep.Started)
	if err != nil {
		m.rep.Error = err.Error()
		return m.rep, err
	}
	m.rep.Result = Committed
	if !m.rep.verified() {
		m.rep.Result = CommittedUnverified
		m.rep.Warnings = append(m.rep.Warnings, "nothing showed that the restored copy works beyond its task running: give a --probe, or run it with a migration hook")
	}
	return m.rep, nil
}

type run struct {
	o    Options
	src  Source
	tgt  Target
	rep  *Report
	undo undoStack

	pid      uint32
	addr     *agent.ContainerAddress // the container's own address (Options.Network), or nil
	hook     Hook
	replay   ReplayHook // ModeReplay: the hook, as a ReplayHook
	boundary *kafkahooks.Boundary
	frozenAt time.Time
	ckptRef  string
	ckpt     *checkpointDirs
	index    ocispec.Descriptor // the checkpoint index
	session  agent.Session

	// From the restore on: the last time the target answered, and whether a copy may run
	// there although the rollback asked for it to go (the source must then stay frozen).
	lastContact  atomic.Int64
	copyMayRun   bool
	copyOwnsWork bool // the group's committed offsets moved past the boundary
	// copyReleased: the copy of an application with capability hold was told to resume (and
	// did not answer that it stays held): it may have run, so the source never thaws again.
	copyReleased   bool
	stopHeartbeats func()
}

// checkpointDirs are the local directories of a dump: CRIU's work files and its image.
type checkpointDirs struct{ work, image string }

func (m *run) pipeline(ctx context.Context) error {
	defer m.cleanup(context.WithoutCancel(ctx))
	defer func() {
		if m.stopHeartbeats != nil {
			m.stopHeartbeats()
		}
	}()
	for _, step := range []struct {
		p  Phase
		fn func(context.Context) error
	}{
		{Preflight, m.preflight}, {Quiesce, m.quiesce}, {Checkpoint, m.checkpoint}, {Transfer, m.transfer},
		{Restore, m.restore}, {Resume, m.resume}, {Verify, m.verify},
	} {
		if err := m.phase(ctx, step.p, step.fn); err != nil {
			return m.rollback(context.WithoutCancel(ctx), err)
		}
	}
	// Past this point the target runs the workload: a failure of commit must not roll back.
	m.undo = nil
	return m.phase(context.WithoutCancel(ctx), Commit, m.commit)
}

// phase runs fn as phase p under the phase timeout (the catch-up's under CatchUpTimeout) and
// records it in the report.
func (m *run) phase(ctx context.Context, p Phase, fn func(context.Context) error) error {
	timeout := m.o.PhaseTimeout
	if p == CatchUp {
		timeout = m.o.CatchUpTimeout
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if m.o.PhaseProgress != nil {
		m.o.PhaseProgress(PhaseReport{Name: p, Start: start.Sub(m.rep.Started)}, false)
	}
	err := fn(pctx)
	if err != nil && pctx.Err() != nil && ctx.Err() == nil && p != CatchUp {
		err = fmt.Errorf("%w (phase timeout %s)", err, timeout)
	}
	pr := PhaseReport{Name: p, Start: start.Sub(m.rep.Started), Duration: time.Since(start)}
	if err != nil {
		pr.Error = err.Error()
		err = &PhaseError{Phase: p, Err: err}
	}
	m.recordPhase(pr)
	return err
}

// recordPhase adds a finished phase to the report and tells Options.PhaseProgress.
func (m *run) recordPhase(pr PhaseReport) {
	m.rep.Phases = append(m.rep.Phases, pr)
	if m.o.PhaseProgress != nil {
		m.o.PhaseProgress(pr, true)
	}
}

// rollback pops the undo stack after the failure cause and says how it went.
func (m *run) rollback(ctx context.Context, cause error) error {
	start := time.Now()
	if m.o.PhaseProgress != nil {
		m.o.PhaseProgress(PhaseReport{Name: Rollback, Start: start.Sub(m.rep.Started)}, false)
	}
	m.rep.Undo = m.undo.unwind(ctx, m.o.LocalUndoTimeout, m.o.RemoteUndoTimeout)
	m.undo = nil
	pr := PhaseReport{Name: Rollback, Start: start.Sub(m.rep.Started), Duration: time.Since(start)}
	var failed []error
	for _, u := range m.rep.Undo {
		switch {
		case u.Error == "":
		case u.BestEffort:
			m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("%s did not succeed (the agent drops an idle session by itself): %s", u.Name, u.Error))
		default:
			failed = append(failed, fmt.Errorf("%s: %s", u.Name, u.Error))
		}
	}
	if len(failed) == 0 {
		m.rep.Result = RolledBack
		m.recordPhase(pr)
		return cause
	}
	m.rep.Result = RollbackFailed
	rerr := fmt.Errorf("rollback failed (%w): run `ftwin-migrate recover %s` to settle the container", errors.Join(failed...), m.o.Container)
	pr.Error = rerr.Error()
	m.recordPhase(pr)
	return fmt.Errorf("%w; %w", cause, rerr)
}

func (m *run) cleanup(ctx context.Context) {
	if m.ckptRef != "" {
		if err := m.src.DeleteCheckpoint(ctx, m.ckptRef); err != nil {
			m.rep.Warnings = append(m.rep.Warnings, err.Error())
		}
	}
	if m.ckpt != nil {
		_ = os.RemoveAll(m.ckpt.work)
	}
}

func (m *run) preflight(ctx context.Context) error {
	task, err := m.src.Running(ctx)
	if err != nil {
		return fmt.Errorf("%w (namespace %s)", err, m.o.Namespace)
	}
	m.pid = task.Pid
	hello, err := m.tgt.Hello(ctx)
	if err != nil {
		return err
	}
	m.rep.To, m.rep.Target = hello.Host, &hello
	if hello.ClockWarning != "" {
		m.rep.Warnings = append(m.rep.Warnings, "target "+hello.Host+": "+hello.ClockWarning)
	}
	if hello.FreeBytes < 64<<20 {
		return fmt.Errorf("target %s has %d MiB free for CRIU images: free some space", hello.Host, hello.FreeBytes>>20)
	}
	cpuinfo, err := m.src.CPUInfo(ctx)
	if err != nil {
		return err
	}
	if err := m.tgt.CheckCPU(ctx, cpuinfo); err != nil {
		return err
	}
	if err := m.findHook(); err != nil {
		return err
	}
	if m.o.Network != nil {
		if m.addr, err = m.o.Network.Address(ctx, m.o.Namespace, m.o.Container); err != nil {
			return fmt.Errorf("the network of container %s: %w", m.o.Container, err)
		}
	}
	switch {
	case m.o.TCP != "":
	case m.addr != nil:
		m.o.TCP = restore.TCPEstablished
	default:
		m.o.TCP = restore.TCPClose
	}
	m.rep.TCP, m.rep.Address = string(m.o.TCP), m.addr
	if m.addr != nil && m.o.Mode == ModeReplay {
		return fmt.Errorf("container %s has an address of its own (%s), which cannot be on two hosts at once: migrate it by stop-and-copy (--mode stop-and-copy)", m.o.Container, m.addr.IP)
	}
	if m.o.Mode == ModeReplay {
		if err := m.checkReplay(ctx); err != nil {
			return err
		}
	} else {
		m.warnSessionTimeout(task.ResidentBytes)
	}
	m.ckptRef = fmt.Sprintf("%s%s:%d", checkpointPrefix, m.o.Container, time.Now().UnixNano())
	req := agent.SessionRequest{
		Namespace: m.o.Namespace, Container: m.o.Container, BaseImage: task.Image,
		TCP: m.o.TCP, Probe: m.o.Probe, SourceHost: m.o.SourceHost, Address: m.addr,
	}
	if sh, ok := m.hook.(*SocketHook); ok {
		req.HookSocket = sh.Socket
	}
	// Pushed before the call, best effort: a session the agent opened but whose answer was lost
	// cannot be named; the agent drops it once it idles past its timeout.
	m.undo.push(undoAbortTarget, Preflight, remote, bestEffort, m.tgt.Abort)
	s, err := m.tgt.Open(ctx, req)
	m.session, m.rep.Session = s, s.ID
	return err
}

// findHook settles which hook the migration uses.
func (m *run) findHook() error {
	if m.o.Hook != nil || m.o.HookMode == HookOff {
		m.hook = m.o.Hook
		return nil
	}
	sh, err := FindSocketHook(m.pid, m.o.HookSocket)
	if err != nil {
		return err
	}
	if sh == nil {
		if m.o.HookMode == HookRequired {
			return fmt.Errorf("container %s serves no migration hook at %s (hook mode required): run it with kafkahooks, or migrate with hook mode auto or off", m.o.Container, m.o.HookSocket)
		}
		return nil
	}
	m.hook = sh
	return nil
}

func (m *run) quiesce(ctx context.Context) error {
	if m.hook == nil {
		m.rep.Warnings = append(m.rep.Warnings, "no application hook: no boundary was taken; the application is frozen as it is")
		return nil
	}
	// Abort on rollback even if prepare fails or times out: the application may reach the
	// boundary after we stopped waiting and would then hold for ever.
	m.undo.pushUndo(undo{name: "tell the source application to carry on", phase: Quiesce, where: local, need: required, fn: m.hook.Abort, guard: m.sourceMayRun})
	b, err := m.hook.Prepare(ctx)
	if err != nil {
		return err
	}
	m.boundary, m.rep.Boundary = b, b
	return m.checkCommitted(ctx)
}

// checkCommitted compares the group's committed offsets on the broker with the boundary.
func (m *run) checkCommitted(ctx context.Context) error {
	m.rep.BoundaryCheck = &BoundaryCheck{}
	if m.o.committed == nil {
		m.rep.Warnings = append(m.rep.Warnings, "no --brokers: the boundary was not checked against the broker")
		return nil
	}
	committed, err := m.o.committed(ctx, m.boundary.Group)
	if err != nil {
		return err
	}
	mine := kafkahooks.Offsets{}
	for t := range m.boundary.Offsets {
		mine[t] = committed[t]
	}
	if !mine.Equal(m.boundary.Offsets) {
		return fmt.Errorf("group %s: committed offsets on the broker %v differ from the boundary the application reported %v", m.boundary.Group, mine, m.boundary.Offsets)
	}
	m.rep.BoundaryCheck.CommittedBefore = true
	return nil
}

// makeCheckpointDirs creates the dump's CRIU work and image directories.
func (m *run) makeCheckpointDirs() error {
	var err error
	m.ckpt = &checkpointDirs{}
	if m.o.WorkDir != "" {
		m.ckpt.work, err = os.MkdirTemp(m.o.WorkDir, workDirPrefix)
	} else {
		m.ckpt.work, err = os.MkdirTemp("", workDirPrefix)
	}
	if err != nil {
		return fmt.Errorf("CRIU work directory: %w", err)
	}
	m.ckpt.image = filepath.Join(m.ckpt.work, "image")
	if err := os.Mkdir(m.ckpt.image, 0o700); err != nil {
		return fmt.Errorf("CRIU image directory: %w", err)
	}
	return nil
}

func (m *run) checkpoint(ctx context.Context) error {
	if err := m.makeCheckpointDirs(); err != nil {
		return err
	}
	// Record where the container is going, and what this migration leaves on this host, before
	// it freezes: should this process die, Recover finds the frozen source, settles it with the
	// target and removes the leftovers.
	m.undo.pushUndo(undo{name: "clear the source's migration label", phase: Checkpoint, where: local, need: required,
		fn: func(ctx context.Context) error { return m.src.SetMigrating(ctx, nil) }, guard: m.sourceMayRun})
	if err := m.src.SetMigrating(ctx, &Migrating{Target: m.o.Target, WorkDir: m.ckpt.work, Checkpoint: m.ckptRef}); err != nil {
		return err
	}
	// Freeze first and keep the source frozen until commit or rollback: a rollback is then a
	// thaw, which cannot fail the way a restore can.
	m.frozenAt = time.Now()
	if err := m.src.Freeze(ctx); err != nil {
		return err
	}
	m.undo.pushUndo(undo{name: "thaw the source", phase: Checkpoint, where: local, need: required, fn: m.thaw, guard: m.sourceMayRun})
	if m.addr != nil {
		// Frozen, the source's kernel would still take a peer's packets into the sockets the
		// dump is about to record (and acknowledge them, for the copy never to see): its
		// address leaves the network before the dump, until the commit or a rollback.
		if err := m.o.Network.Disconnect(ctx, m.o.Namespace, m.o.Container); err != nil {
			return fmt.Errorf("take the source's address %s off the network: %w", m.addr.IP, err)
		}
		m.undo.pushUndo(undo{name: "reconnect the source's address", phase: Checkpoint, where: local, need: required, guard: m.sourceMayRun,
			fn: func(ctx context.Context) error { return m.o.Network.Reconnect(ctx, m.o.Namespace, m.o.Container) }})
	}
	// The CRIU image goes to a directory of ours, not through containerd's content store: it is
	// streamed to the agent as it is, and restored from a directory there.
	res, err := m.src.Checkpoint(ctx, m.ckptRef, m.ckpt.work, m.ckpt.image)
	if err != nil {
		return err
	}
	m.rep.CheckpointIndex = res.Target.Digest.String()
	m.index = res.Target
	if m.rep.CRIU = res.CRIU; m.rep.CRIU == nil {
		m.rep.Warnings = append(m.rep.Warnings, "CRIU dump statistics unavailable")
	}
	return nil
}

// heartbeatTimeout is how long the agent lets an uncommitted copy run without hearing from
// us (agents before heartbeats said nothing: their idle timeout then).
func (m *run) heartbeatTimeout() time.Duration {
	if m.session.HeartbeatTimeout > 0 {
		return m.session.HeartbeatTimeout
	}
	return m.session.Timeout
}

// startHeartbeats keeps the target's copy alive until the pipeline ends.
func (m *run) startHeartbeats(ctx context.Context) {
	m.lastContact.Store(time.Now().UnixNano())
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	m.stopHeartbeats = func() { cancel(); <-done }
	every := max(m.heartbeatTimeout()/4, 10*time.Millisecond)
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
			}
			bctx, bcancel := context.WithTimeout(hctx, every)
			if m.tgt.Heartbeat(bctx) == nil {
				m.lastContact.Store(time.Now().UnixNano())
			}
			bcancel()
		}
	}()
}

// abortCopy is the undo of the restore: the target's copy must be gone before the source
// thaws. If the agent does not confirm the abort, it is given until its heartbeat deadline
// (after which it kills the copy itself, and an agent that restarts removes it) and asked
// again; if it still cannot say the copy is gone, the source stays frozen for Recover.
func (m *run) abortCopy(ctx context.Context) error {
	if err := m.keepReleasedCopy(ctx); err != nil {
		return err
	}
	if err := m.checkCopyDidNotCommit(ctx); err != nil {
		return err
	}
	if m.stopHeartbeats != nil {
		m.stopHeartbeats()
		m.stopHeartbeats = nil
	}
	err := m.tgt.Abort(ctx)
	if err == nil {
		return nil
	}
	deadline := time.Unix(0, m.lastContact.Load()).Add(m.heartbeatTimeout())
	select {
	case <-time.After(time.Until(deadline)):
	case <-ctx.Done():
	}
	gone, serr := m.tgt.CopyGone(ctx)
	if serr == nil && gone {
		return nil
	}
	if serr == nil {
		serr = errors.New("it still holds a running copy")
	}
	m.copyMayRun = true
	return fmt.Errorf("the target did not confirm that its copy is gone (abort: %v; asked again past its heartbeat deadline: %v)", err, serr)
}

// checkCopyDidNotCommit reads, when the migrator knows the broker, the group's committed
// offsets before the copy is removed: if they moved past the boundary, the restored copy has
// committed work of its own, and the frozen source's state no longer matches the log — the copy
// owns the work. It is then left running and the source frozen (the rollback fails and says
// so) rather than rolled back into a state the log has left behind. A broker that cannot be
// asked is a warning: the rollback goes on.
func (m *run) checkCopyDidNotCommit(ctx context.Context) error {
	if m.o.committed == nil || m.boundary == nil || m.o.Mode == ModeReplay {
		return nil // in a replay the shadow commits nothing before its takeover
	}
	committed, err := m.o.committed(ctx, m.boundary.Group)
	if err != nil {
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("before removing the copy: could not read the committed offsets of group %s: %v", m.boundary.Group, err))
		return nil
	}
	if now := committed.Only(m.boundary.Offsets); !now.Equal(m.boundary.Offsets) {
		m.copyOwnsWork = true
		// The copy works (it committed): keep it, as a commit would. The agent commits only a
		// copy whose verify it saw pass; one it refuses goes when the heartbeats stop.
		kept := "the target committed it"
		if err := m.tgt.Commit(ctx); err != nil {
			kept = fmt.Sprintf("the target did not commit it (%v) and removes it when the heartbeats stop", err)
		}
		return fmt.Errorf("the restored copy committed past the boundary (group %s: %v, boundary %v): it owns the work, so it was not removed (%s) and the source stays frozen; run `ftwin-migrate recover %s`", m.boundary.Group, now, m.boundary.Offsets, kept, m.o.Container)
	}
	return nil
}

// keepReleasedCopy is the rule of an application with capability hold (protocol 3): its
// restored copy did nothing until it was told to resume, and once told it may have run —
// committed, or bumped its producer's epoch and fenced the source — so a failure after that
// keeps the copy, as a commit would, and never thaws the source. (Before the resume, the held
// copy is removed and the source thawed as for any application.) A copy that is not running
// any more is not kept by the agent; the source then stays frozen for Recover.
func (m *run) keepReleasedCopy(ctx context.Context) error {
	if !m.copyReleased {
		return nil
	}
	kept := "the target committed it"
	if err := m.tgt.Commit(ctx); err != nil {
		kept = fmt.Sprintf("the target did not commit it (%v) and removes it when the heartbeats stop", err)
	}
	return fmt.Errorf("the restored copy was told to resume and may have run (its application holds until resumed: capability %s), so it was not removed (%s) and the source is never thawed after that; run `ftwin-migrate recover %s`", kafkahooks.CapHold, kept, m.o.Container)
}

// sourceMayRun guards the source's undos: while a copy may run on the target, the source
// stays frozen (and labelled, for Recover).
func (m *run) sourceMayRun() error {
	if m.copyReleased {
		return errors.New("the source stays frozen: its copy was told to resume and may have run (capability " + kafkahooks.CapHold + ")")
	}
	if m.copyOwnsWork {
		return errors.New("the source stays frozen: the restored copy committed past the boundary and owns the work")
	}
	if m.copyMayRun {
		return errors.New("the source stays frozen: a copy may still run on the target (when it is reachable again run `ftwin-migrate recover " + m.o.Container + "`; --force-thaw if it is gone for good)")
	}
	return nil
}

// thaw is the undo of the freeze; the downtime of a rolled-back migration ends with it.
func (m *run) thaw(ctx context.Context) error {
	if err := m.src.Thaw(ctx); err != nil {
		return err
	}
	m.rep.Downtime = time.Since(m.frozenAt)
	return nil
}

func (m *run) transfer(ctx context.Context) error {
	rcv := m.tgt.Receiver()
	st, err := transfer.Push(ctx, m.src.Content(ctx), m.index, rcv, m.o.Progress)
	if err == nil {
		var ds transfer.DirStats
		ds, err = transfer.PushDir(ctx, m.ckpt.image, rcv)
		m.rep.Image = &ds
		st.BlobsSent++
		st.BytesSent += ds.Bytes
		st.WireBytes += ds.WireBytes
	}
	m.rep.Transfer = st
	m.rep.CompressionRatio = st.CompressionRatio()
	return err
}

func (m *run) restore(ctx context.Context) error {
	// From here on the target may run a copy: it must be gone before the source thaws, so
	// the session's abort moves to the top of the stack; and the agent kills the copy itself
	// should the heartbeats stop.
	m.startHeartbeats(ctx)
	hb := m.heartbeatTimeout()
	m.undo.pushUndo(undo{name: undoAbortTarget, phase: Restore, where: remote, need: required, fn: m.abortCopy,
		timeout: hb + 2*m.o.RemoteUndoTimeout})
	digest := ""
	if m.rep.Image != nil {
		digest = m.rep.Image.Digest
	}
	res, err := m.tgt.Restore(ctx, m.index, digest)
	if err != nil {
		return err
	}
	m.rep.RestoreTime, m.rep.CRIURestore, m.rep.TargetLog = res.Duration, res.CRIU, res.Log
	return nil
}

func (m *run) resume(ctx context.Context) error {
	defer func() { m.rep.Downtime = time.Since(m.frozenAt) }()
	if m.hook == nil {
		return nil
	}
	if m.rep.BoundaryCheck == nil {
		m.rep.BoundaryCheck = &BoundaryCheck{}
	}
	hold := m.boundary != nil && m.boundary.Can(kafkahooks.CapHold)
	m.copyReleased = hold // from the call on, the copy may run (unless it says it stays held)
	at, err := m.hook.Resume(ctx, m.tgt.HookTransport())
	if err != nil {
		if hold && errors.Is(err, kafkahooks.ErrState) {
			m.copyReleased = false // a held copy answers 409 only when it did not let go
		}
		return fmt.Errorf("resume the restored application: %w", err)
	}
	c := m.rep.BoundaryCheck
	c.Resumed, c.ResumedAt = true, at
	c.ResumedMatch = m.boundary != nil && at.Equal(m.boundary.Offsets)
	if !c.ResumedMatch {
		return fmt.Errorf("the restored application resumed at %v, not at the boundary %v", at, m.boundary.Offsets)
	}
	m.rep.addEvidence("the application resumed at the boundary")
	return nil
}

// verify asks the target whether its copy runs (and passes the probe), waits out the settle
// window and asks again: a copy that dies soon after its restore is not committed.
func (m *run) verify(ctx context.Context) error {
	check := func() error {
		res, err := m.tgt.Verify(ctx)
		if err != nil {
			return err
		}
		if !res.Running {
			return fmt.Errorf("the restored container %s is not running on %s", m.o.Container, m.rep.To)
		}
		if res.Probe != "" {
			m.rep.addEvidence("the probe " + m.o.Probe + " passed")
		}
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	m.rep.addEvidence("the task runs")
	if m.o.Settle <= 0 {
		return nil
	}
	settle := m.settleWindow(ctx)
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := check(); err != nil {
		return fmt.Errorf("within the %v settle window after its restore: %w", settle, err)
	}
	m.rep.addEvidence(fmt.Sprintf("alive through a %v settle window", settle))
	return m.checkProgress(ctx)
}

// settleWindow is Options.Settle, made long enough for the resumed copy to commit: an
// application that reports its commit interval (protocol 3, a Kafka Streams application's
// commit.interval.ms) gets that interval and a second, or checkProgress would call a copy that
// has not committed yet stuck.
func (m *run) settleWindow(ctx context.Context) time.Duration {
	settle := m.o.Settle
	cs, ok := m.hook.(copyStatus)
	if !ok || m.rep.BoundaryCheck == nil || !m.rep.BoundaryCheck.Resumed {
		return settle
	}
	st, err := cs.ShadowStatus(ctx, m.tgt.HookTransport())
	if err != nil || st.CommitInterval <= 0 {
		return settle
	}
	if need := st.CommitInterval + time.Second; need > settle {
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("the settle window is %v, not %v: the application commits every %v", need, settle, st.CommitInterval))
		settle = need
	}
	return settle
}

// copyStatus is what a hook that can read the restored copy's status offers (SocketHook).
type copyStatus interface {
	ShadowStatus(ctx context.Context, target http.RoundTripper) (kafkahooks.Status, error)
}

// checkProgress asks the resumed copy, after the settle window, whether it committed past the
// boundary: progress. If it has not, and the broker shows records waiting past the boundary,
// the copy is stuck (a client blocked for good after its restore, say): the migration rolls
// back, which is safe since the copy committed nothing. Without a hook that reports its status,
// or without --brokers, the report says what could not be told.
func (m *run) checkProgress(ctx context.Context) error {
	cs, ok := m.hook.(copyStatus)
	if !ok || m.boundary == nil || !m.rep.BoundaryCheck.Resumed {
		return nil
	}
	st, err := cs.ShadowStatus(ctx, m.tgt.HookTransport())
	if err != nil {
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("the restored application's status after the settle window: %v", err))
		return nil
	}
	if !st.Offsets.Only(m.boundary.Offsets).Equal(m.boundary.Offsets) {
		m.rep.addEvidence("the copy committed past the boundary after its resume")
		return nil
	}
	if m.o.endOffsets == nil {
		m.rep.Warnings = append(m.rep.Warnings, "the copy committed nothing during the settle window; without --brokers the migrator cannot tell an idle input from a stuck copy")
		return nil
	}
	ends, err := m.o.endOffsets(ctx, m.boundary.Offsets)
	if err != nil {
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("the copy committed nothing during the settle window, and the log end offsets could not be read: %v", err))
		return nil
	}
	for t, ps := range m.boundary.Offsets {
		for p, at := range ps {
			if end, ok := ends.Lookup(t, p); ok && end > at {
				return fmt.Errorf("the restored application committed nothing in the %v settle window although records wait past the boundary (%s[%d]: boundary %d, log end %d): it looks stuck; the source carries on", m.o.Settle, t, p, at, end)
			}
		}
	}
	m.rep.addEvidence("no records arrived past the boundary during the settle window (an idle input)")
	return nil
}

// commit makes the target's copy the only one. A target that does not confirm it fails the
// migration without a rollback (the copy may already be final there): the source stays frozen
// and labelled for Recover. A source that cannot be removed afterwards is a warning.
func (m *run) commit(ctx context.Context) error {
	if err := m.tgt.Commit(ctx); err != nil {
		m.rep.Result = CommitUnconfirmed
		return fmt.Errorf("the target runs the container but did not confirm the commit; the source stays frozen and labelled: run `ftwin-migrate recover %s`: %w", m.o.Container, err)
	}
	if err := m.src.Remove(ctx); err != nil {
		m.rep.Warnings = append(m.rep.Warnings, err.Error())
	}
	if m.addr != nil {
		if err := m.o.Network.Remove(ctx, m.o.Namespace, m.o.Container); err != nil {
			m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("the source's network namespace for %s remains: %v", m.o.Container, err))
		}
	}
	return nil
}

// warnSessionTimeout warns when the expected downtime (dump and transfer of the task's
// resident memory at a rate measured on lab hosts, plus a second) approaches the consumer
// group's session timeout, past which the group rebalances.
func (m *run) warnSessionTimeout(resident int64) {
	if resident <= 0 {
		return
	}
	const bytesPerSecond = 40 << 20
	expected := time.Second + time.Duration(float64(resident)/bytesPerSecond*float64(time.Second))
	m.rep.ExpectedDowntime = expected
	if expected > m.o.SessionTimeout/2 {
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("expected downtime %v (for %d MiB resident) approaches the group session timeout %v: the group may rebalance; raise session.timeout.ms or shrink the state",
			expected.Round(100*time.Millisecond), resident>>20, m.o.SessionTimeout))
	}
}

// MigratingLabel marks a source container from its freeze to commit or rollback; its value is
// the target agent's address. WorkDirLabel and CheckpointLabel name what the migration keeps
// on the source meanwhile (its CRIU work directory, its checkpoint image), for Recover.
const (
	MigratingLabel  = "ftwin-migrate.dev/migrating-to"
	WorkDirLabel    = "ftwin-migrate.dev/migration-work-dir"
	CheckpointLabel = "ftwin-migrate.dev/migration-checkpoint"
)

// workDirPrefix starts the name of a migration's CRIU work directory; checkpointPrefix the
// name of its checkpoint image. Recover removes only what carries them.
const (
	workDirPrefix    = "ftwin-criu-work-"
	checkpointPrefix = "ftwin-migrate/checkpoint/"
)

// Migrating is what MigratingLabel and its companions record on the source.
type Migrating struct {
	Target, WorkDir, Checkpoint string
}

// PhaseError says which phase failed.
type PhaseError struct {
	Phase Phase
	Err   error
}

func (e *PhaseError) Error() string { return fmt.Sprintf("%s: %v", e.Phase, e.Err) }
func (e *PhaseError) Unwrap() error { return e.Err }
