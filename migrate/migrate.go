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
	"os"
	"path/filepath"
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
	// TCP says what becomes of established TCP connections on the target. Default TCPClose.
	TCP restore.TCPMode
	// Probe is an http:// URL the agent checks on the target before commit (optional).
	Probe string
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
	// AgentOpts configure the agent client (tests cut or corrupt the traffic here).
	AgentOpts []agent.ClientOpt
	// WorkDir is where the CRIU work directory of the dump is kept for its statistics. It must
	// be visible to the source's containerd. Default: a temporary directory, removed after.
	WorkDir string
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
	if o.TCP == "" {
		o.TCP = restore.TCPClose
	}
	if o.HookSocket == "" {
		o.HookSocket = DefaultHookSocket
	}
	if o.SessionTimeout == 0 {
		o.SessionTimeout = 45 * time.Second
	}
	if o.SourceHost == "" {
		o.SourceHost, _ = os.Hostname()
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
	return Run(ctx, NewContainerdSource(client, o.Container), NewAgentTarget(o.Target, o.TLS, o.AgentOpts...), o)
}

// Run moves the container from src to tgt: the pipeline itself. ctx must carry what src
// needs (for containerd, the namespace).
func Run(ctx context.Context, src Source, tgt Target, o Options) (*Report, error) {
	o.setDefaults()
	m := &run{o: o, src: src, tgt: tgt, rep: &Report{Container: o.Container, From: o.SourceHost, To: o.Target, Started: time.Now()}}
	err := m.pipeline(ctx)
	m.rep.Total = time.Since(m.rep.Started)
	if err != nil {
		m.rep.Error = err.Error()
		return m.rep, err
	}
	m.rep.Result = Committed
	return m.rep, nil
}

type run struct {
	o    Options
	src  Source
	tgt  Target
	rep  *Report
	undo undoStack

	pid      uint32
	hook     Hook
	boundary *kafkahooks.Boundary
	frozenAt time.Time
	ckptRef  string
	ckpt     *checkpointDirs
	index    ocispec.Descriptor // the checkpoint index
}

// checkpointDirs are the local directories of a dump: CRIU's work files and its image.
type checkpointDirs struct{ work, image string }

func (m *run) pipeline(ctx context.Context) error {
	defer m.cleanup(context.WithoutCancel(ctx))
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

// phase runs fn as phase p under the phase timeout and records it in the report.
func (m *run) phase(ctx context.Context, p Phase, fn func(context.Context) error) error {
	pctx, cancel := context.WithTimeout(ctx, m.o.PhaseTimeout)
	defer cancel()
	start := time.Now()
	err := fn(pctx)
	if err != nil && pctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("%w (phase timeout %s)", err, m.o.PhaseTimeout)
	}
	pr := PhaseReport{Name: p, Start: start.Sub(m.rep.Started), Duration: time.Since(start)}
	if err != nil {
		pr.Error = err.Error()
		err = &PhaseError{Phase: p, Err: err}
	}
	m.rep.Phases = append(m.rep.Phases, pr)
	return err
}

// rollback pops the undo stack after the failure cause and says how it went.
func (m *run) rollback(ctx context.Context, cause error) error {
	start := time.Now()
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
		m.rep.Phases = append(m.rep.Phases, pr)
		return cause
	}
	m.rep.Result = RollbackFailed
	rerr := fmt.Errorf("rollback failed (%w): run `ftwin-migrate recover %s` to settle the container", errors.Join(failed...), m.o.Container)
	pr.Error = rerr.Error()
	m.rep.Phases = append(m.rep.Phases, pr)
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
	m.warnSessionTimeout(task.ResidentBytes)
	m.ckptRef = fmt.Sprintf("ftwin-migrate/checkpoint/%s:%d", m.o.Container, time.Now().UnixNano())
	req := agent.SessionRequest{
		Namespace: m.o.Namespace, Container: m.o.Container,
		TCP: m.o.TCP, Probe: m.o.Probe, SourceHost: m.o.SourceHost,
	}
	if sh, ok := m.hook.(*SocketHook); ok {
		req.HookSocket = sh.Socket
	}
	// Pushed before the call: a session the agent opened but whose answer was lost is aborted
	// too (the agent also drops it once it idles past its timeout).
	m.undo.push(undoAbortTarget, Preflight, remote, bestEffort, m.tgt.Abort)
	s, err := m.tgt.Open(ctx, req)
	m.rep.Session = s.ID
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
	m.undo.push("tell the source application to carry on", Quiesce, local, required, m.hook.Abort)
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
	if len(m.o.Brokers) == 0 {
		m.rep.Warnings = append(m.rep.Warnings, "no --brokers: the boundary was not checked against the broker")
		return nil
	}
	committed, err := committedOffsets(ctx, m.o.Brokers, m.o.KafkaOpts, m.boundary.Group)
	if err != nil {
		return err
	}
	mine := kafkahooks.Offsets{}
	for t := range m.boundary.Offsets {
		mine[t] = committed[t]
	}
	if !offsetsEqual(mine, m.boundary.Offsets) {
		return fmt.Errorf("group %s: committed offsets on the broker %v differ from the boundary the application reported %v", m.boundary.Group, mine, m.boundary.Offsets)
	}
	m.rep.BoundaryCheck.CommittedBefore = true
	return nil
}

func (m *run) checkpoint(ctx context.Context) error {
	// Record where the container is going before it freezes: should this process die, Recover
	// finds the frozen source and settles it with the target.
	m.undo.push("clear the source's migration label", Checkpoint, local, required, func(ctx context.Context) error { return m.src.SetMigrating(ctx, "") })
	if err := m.src.SetMigrating(ctx, m.o.Target); err != nil {
		return err
	}
	// Freeze first and keep the source frozen until commit or rollback: a rollback is then a
	// thaw, which cannot fail the way a restore can.
	m.frozenAt = time.Now()
	if err := m.src.Freeze(ctx); err != nil {
		return err
	}
	m.undo.push("thaw the source", Checkpoint, local, required, m.thaw)
	var err error
	m.ckpt = &checkpointDirs{}
	if m.o.WorkDir != "" {
		m.ckpt.work, err = os.MkdirTemp(m.o.WorkDir, "criu-work-")
	} else {
		m.ckpt.work, err = os.MkdirTemp("", "ftwin-criu-work-")
	}
	if err != nil {
		return fmt.Errorf("CRIU work directory: %w", err)
	}
	m.ckpt.image = filepath.Join(m.ckpt.work, "image")
	if err := os.Mkdir(m.ckpt.image, 0o700); err != nil {
		return fmt.Errorf("CRIU image directory: %w", err)
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
	// the session's abort moves to the top of the stack.
	m.undo.push(undoAbortTarget, Restore, remote, required, m.tgt.Abort)
	digest := ""
	if m.rep.Image != nil {
		digest = m.rep.Image.Digest
	}
	res, err := m.tgt.Restore(ctx, m.index, digest)
	if err != nil {
		return err
	}
	m.rep.RestoreTime, m.rep.CRIURestore = res.Duration, res.CRIU
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
	at, err := m.hook.Resume(ctx, m.tgt.HookTransport())
	if err != nil {
		return fmt.Errorf("resume the restored application: %w", err)
	}
	c := m.rep.BoundaryCheck
	c.Resumed, c.ResumedAt = true, at
	c.ResumedMatch = m.boundary != nil && offsetsEqual(at, m.boundary.Offsets)
	if !c.ResumedMatch {
		return fmt.Errorf("the restored application resumed at %v, not at the boundary %v", at, m.boundary.Offsets)
	}
	return nil
}

func (m *run) verify(ctx context.Context) error {
	res, err := m.tgt.Verify(ctx)
	if err != nil {
		return err
	}
	if !res.Running {
		return fmt.Errorf("the restored container %s is not running on %s", m.o.Container, m.rep.To)
	}
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
// the target agent's address.
const MigratingLabel = "ftwin-migrate.dev/migrating-to"

// PhaseError says which phase failed.
type PhaseError struct {
	Phase Phase
	Err   error
}

func (e *PhaseError) Error() string { return fmt.Sprintf("%s: %v", e.Phase, e.Err) }
func (e *PhaseError) Unwrap() error { return e.Err }
