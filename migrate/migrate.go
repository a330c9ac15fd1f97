// Package migrate live-migrates a running containerd container to another host's agent
// (package agent), as a pipeline of named phases:
//
//	preflight   the agent is reachable, authenticated, speaks our protocol, its CPU can run
//	            our CRIU image (criu cpuinfo), it has room, and the container is free there
//	quiesce     the application's hook (if any) reaches a safe boundary (see Hook)
//	checkpoint  the task is frozen and dumped with CRIU through containerd; it stays frozen
//	transfer    the checkpoint (and any base image blob the target lacks) streams over mTLS
//	restore     the agent restores the container in its containerd
//	verify      the restored task runs and passes its health probe
//	commit      the target keeps it; the frozen source is removed
//
// Any failure before commit rolls back: the agent removes whatever it made and the source is
// thawed (and its hook told to carry on), so that after every migration exactly one copy runs.
package migrate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
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
	Verify     Phase = "verify"
	Commit     Phase = "commit"
	Rollback   Phase = "rollback"
)

// Hook lets the application inside the container take part (package kafkahooks implements it
// for Kafka consumers). Nil means an application without hooks: it is frozen as it is.
type Hook interface {
	// Prepare brings the application to a boundary it can resume from, before the freeze.
	// What it returns is recorded in the report (for Kafka: group, member, offsets).
	Prepare(ctx context.Context) (boundary any, err error)
	// Resume tells the restored copy to continue from the boundary.
	Resume(ctx context.Context) error
	// Abort tells the source, thawed after a rollback, to carry on as if nothing happened.
	Abort(ctx context.Context) error
}

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
	// SourceHost names this host in the agent's logs and the report.
	SourceHost string
	// TCP is agent.TCPClose (default) or agent.TCPEstablished.
	TCP string
	// Probe is an http:// URL the agent checks on the target before commit (optional).
	Probe string
	// Hook is a custom migration hook. When nil, the container's own hook socket is used if it
	// has one (see HookSocket); otherwise the application is frozen as it is.
	Hook Hook
	// HookSocket is the path of the application's hook socket inside the container.
	// Default DefaultHookSocket; "none" ignores any hook.
	HookSocket string
	// Brokers, when set, let the migrator check the application's boundary against the group's
	// committed offsets on the broker. KafkaOpts are added to the client (a dialer, TLS, SASL).
	Brokers   []string
	KafkaOpts []kgo.Opt
	// SessionTimeout is the consumer group session timeout, for the warning when the expected
	// downtime approaches it (the application's boundary overrides it). Default 45s.
	SessionTimeout time.Duration
	// PhaseTimeout bounds each phase. Default 2 minutes.
	PhaseTimeout time.Duration
	// Progress receives transfer progress (optional).
	Progress transfer.Progress
	// AgentOpts configure the agent client (tests cut or corrupt the traffic here).
	AgentOpts []agent.ClientOpt
	// WorkDir is where the CRIU work directory of the dump is kept for its statistics. It must
	// be visible to the source's containerd. Default: a temporary directory, removed after.
	WorkDir string
}

// Migrate moves the container and returns its report. The report is returned on failure too,
// saying which phase failed and how the rollback went.
func Migrate(ctx context.Context, client *containerd.Client, o Options) (*Report, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.PhaseTimeout == 0 {
		o.PhaseTimeout = 2 * time.Minute
	}
	if o.TCP == "" {
		o.TCP = agent.TCPClose
	}
	if o.SourceHost == "" {
		o.SourceHost, _ = os.Hostname()
	}
	ctx = namespaces.WithNamespace(ctx, o.Namespace)
	m := &run{o: o, client: client, rep: &Report{Container: o.Container, From: o.SourceHost, To: o.Target, Started: time.Now()}}
	err := m.pipeline(ctx)
	m.rep.Total = time.Since(m.rep.Started)
	if err != nil {
		m.rep.Result, m.rep.Error = "rolled back", err.Error()
		return m.rep, err
	}
	m.rep.Result = "committed"
	return m.rep, nil
}

type run struct {
	o      Options
	client *containerd.Client
	rep    *Report

	agent    *agent.Client
	session  *agent.SessionClient
	task     containerd.Task
	frozenAt time.Time
	paused   bool
	prepared bool
	app      *appHook
	boundary *kafkahooks.Boundary
	ckptRef  string
	workDir  string
	imageDir string // the CRIU image, written outside containerd's content store
	labeled  bool   // MigratingLabel is set on the source
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

func (m *run) pipeline(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			if rerr := m.phase(context.WithoutCancel(ctx), Rollback, m.rollback); rerr != nil {
				err = fmt.Errorf("%w; rollback: %v", err, rerr)
			}
		}
		m.cleanup(context.WithoutCancel(ctx))
	}()
	for _, step := range []struct {
		p  Phase
		fn func(context.Context) error
	}{
		{Preflight, m.preflight}, {Quiesce, m.quiesce}, {Checkpoint, m.checkpoint},
		{Transfer, m.transfer}, {Restore, m.restore}, {Verify, m.verify},
	} {
		if err := m.phase(ctx, step.p, step.fn); err != nil {
			return err
		}
	}
	// Past this point the target runs the workload: a failure of commit must not roll back.
	if err := m.phase(context.WithoutCancel(ctx), Commit, m.commit); err != nil {
		m.rep.Warnings = append(m.rep.Warnings, err.Error())
	}
	return nil
}

func (m *run) preflight(ctx context.Context) error {
	c, err := m.client.LoadContainer(ctx, m.o.Container)
	if err != nil {
		return fmt.Errorf("container %q in namespace %s: %w", m.o.Container, m.o.Namespace, err)
	}
	if m.task, err = c.Task(ctx, nil); err != nil {
		return fmt.Errorf("container %q has no task to migrate: %w", m.o.Container, err)
	}
	st, err := m.task.Status(ctx)
	if err != nil {
		return fmt.Errorf("status of %q: %w", m.o.Container, err)
	}
	if st.Status != containerd.Running {
		return fmt.Errorf("task of %q is %s, not running", m.o.Container, st.Status)
	}
	if m.o.TLS == nil {
		return errors.New("no TLS configuration: the agent only speaks mutual TLS (see `ftwin-migrate certs init`)")
	}
	m.agent = agent.NewClient(m.o.Target, m.o.TLS, m.o.AgentOpts...)
	hello, err := m.agent.Hello(ctx)
	if err != nil {
		return err
	}
	m.rep.To = hello.Host
	m.rep.Target = &hello
	if hello.FreeBytes < 64<<20 {
		return fmt.Errorf("target %s has %d MiB free for CRIU images: free some space", hello.Host, hello.FreeBytes>>20)
	}
	cpuinfo, err := dumpCPUInfo(ctx)
	if err != nil {
		return err
	}
	if err := m.agent.CheckCPU(ctx, cpuinfo); err != nil {
		return err
	}
	if m.o.Hook == nil && m.o.HookSocket != "none" {
		m.app = findAppHook(m.task.Pid(), m.o.HookSocket)
	}
	m.warnSessionTimeout()
	m.ckptRef = fmt.Sprintf("ftwin-migrate/checkpoint/%s:%d", m.o.Container, time.Now().UnixNano())
	req := agent.SessionRequest{
		Namespace: m.o.Namespace, Container: m.o.Container, CheckpointRef: m.ckptRef,
		TCP: m.o.TCP, Probe: m.o.Probe, SourceHost: m.o.SourceHost,
	}
	if m.app != nil {
		req.HookSocket = m.app.socket
	}
	m.session, err = m.agent.Open(ctx, req)
	return err
}

// warnSessionTimeout warns when the expected downtime (dump and transfer of the task's
// resident memory at a rate measured on lab hosts, plus a second) approaches the consumer
// group's session timeout, past which the group rebalances.
func (m *run) warnSessionTimeout() {
	timeout := m.o.SessionTimeout
	if timeout == 0 {
		timeout = 45 * time.Second
	}
	rss, err := residentBytes(m.task.Pid())
	if err != nil {
		return
	}
	const bytesPerSecond = 40 << 20
	expected := time.Second + time.Duration(float64(rss)/bytesPerSecond*float64(time.Second))
	m.rep.ExpectedDowntime = expected
	if expected > timeout/2 {
		m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("expected downtime %v (for %d MiB resident) approaches the group session timeout %v: the group may rebalance; raise session.timeout.ms or shrink the state",
			expected.Round(100*time.Millisecond), rss>>20, timeout))
	}
}

// residentBytes reads VmRSS of pid.
func residentBytes(pid uint32) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// dumpCPUInfo runs `criu cpuinfo dump` and returns cpuinfo.img.
func dumpCPUInfo(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "ftwin-cpuinfo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if out, err := exec.CommandContext(ctx, "criu", "cpuinfo", "dump", "-D", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("criu cpuinfo dump: %w: %s", err, out)
	}
	return os.ReadFile(filepath.Join(dir, "cpuinfo.img"))
}

func (m *run) quiesce(ctx context.Context) error {
	switch {
	case m.o.Hook != nil:
		b, err := m.o.Hook.Prepare(ctx)
		m.prepared = err == nil
		m.rep.Boundary = b
		return err
	case m.app != nil:
		// Abort on rollback even if prepare fails or times out: the application may reach the
		// boundary after we stopped waiting and would then hold for ever.
		m.prepared = true
		b, err := m.app.Prepare(ctx)
		if err != nil {
			return fmt.Errorf("application hook: %w", err)
		}
		m.boundary, m.rep.Boundary = &b, &b
		return m.checkCommitted(ctx)
	default:
		m.rep.Warnings = append(m.rep.Warnings, "no application hook: no boundary was taken; the application is frozen as it is")
		return nil
	}
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
	if err := m.setMigratingLabel(ctx, m.o.Target); err != nil {
		return err
	}
	m.labeled = true
	// Freeze first and keep the source frozen until commit or rollback: a rollback is then a
	// thaw, which cannot fail the way a restore can.
	m.frozenAt = time.Now()
	if err := m.task.Pause(ctx); err != nil {
		return fmt.Errorf("freeze %s: %w", m.o.Container, err)
	}
	m.paused = true
	var err error
	if m.o.WorkDir != "" {
		m.workDir, err = os.MkdirTemp(m.o.WorkDir, "criu-work-")
	} else {
		m.workDir, err = os.MkdirTemp("", "ftwin-criu-work-")
	}
	if err != nil {
		return err
	}
	m.imageDir = filepath.Join(m.workDir, "image")
	if err := os.Mkdir(m.imageDir, 0o700); err != nil {
		return err
	}
	// The CRIU image goes to a directory of ours, not through containerd's content store: it is
	// streamed to the agent as it is, and restored from a directory there.
	res, err := checkpoint.Checkpoint(ctx, m.client, m.o.Container, checkpoint.WithRef(m.ckptRef),
		checkpoint.WithTCPEstablished(), checkpoint.WithWorkPath(m.workDir), checkpoint.WithImagePath(m.imageDir))
	if err != nil {
		return err
	}
	m.rep.CheckpointIndex = res.Target.Digest.String()
	if m.rep.CRIU = res.CRIU; m.rep.CRIU == nil {
		m.rep.Warnings = append(m.rep.Warnings, "CRIU dump statistics unavailable")
	}
	return nil
}

func (m *run) transfer(ctx context.Context) error {
	img, err := m.client.ImageService().Get(ctx, m.ckptRef)
	if err != nil {
		return err
	}
	st, err := transfer.Push(ctx, transfer.ContentProvider(ctx, m.client), img.Target, m.session, m.o.Progress)
	if err == nil {
		var ds transfer.DirStats
		ds, err = transfer.PushDir(ctx, m.imageDir, m.session)
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
	img, err := m.client.ImageService().Get(ctx, m.ckptRef)
	if err != nil {
		return err
	}
	digest := ""
	if m.rep.Image != nil {
		digest = m.rep.Image.Digest
	}
	res, err := m.session.Restore(ctx, img.Target, digest)
	if err != nil {
		return err
	}
	m.rep.RestoreTime, m.rep.CRIURestore = res.Duration, res.CRIU
	m.rep.Downtime = time.Since(m.frozenAt)
	return nil
}

func (m *run) verify(ctx context.Context) error {
	if _, err := m.session.Verify(ctx); err != nil {
		return err
	}
	switch {
	case m.o.Hook != nil:
		if err := m.o.Hook.Resume(ctx); err != nil {
			return fmt.Errorf("resume the restored application: %w", err)
		}
	case m.app != nil:
		var r agent.HookResumed
		if err := m.session.Hook(ctx, "resume", &r); err != nil {
			return fmt.Errorf("resume the restored application: %w", err)
		}
		if m.rep.BoundaryCheck == nil {
			m.rep.BoundaryCheck = &BoundaryCheck{}
		}
		m.rep.BoundaryCheck.ResumedAt = r.Offsets
		m.rep.BoundaryCheck.ResumedMatch = offsetsEqual(r.Offsets, m.boundary.Offsets)
		if !m.rep.BoundaryCheck.ResumedMatch {
			return fmt.Errorf("the restored application resumed at %v, not at the boundary %v", r.Offsets, m.boundary.Offsets)
		}
	}
	return nil
}

func (m *run) commit(ctx context.Context) error {
	if err := m.session.Commit(ctx); err != nil {
		return fmt.Errorf("the target runs the container but did not confirm the commit: %w", err)
	}
	// The source stays frozen until it is gone: it must never run beside the target.
	if _, err := m.task.Delete(ctx, containerd.WithProcessKill); err != nil {
		return fmt.Errorf("remove the frozen source task (it stays frozen; remove it by hand): %w", err)
	}
	m.paused = false
	c, err := m.client.LoadContainer(ctx, m.o.Container)
	if err == nil {
		err = c.Delete(ctx, containerd.WithSnapshotCleanup)
	}
	if err != nil {
		return fmt.Errorf("remove the source container record: %w", err)
	}
	return nil
}

func (m *run) rollback(ctx context.Context) error {
	var errs []error
	if m.session != nil {
		if err := m.session.Abort(ctx); err != nil {
			// An unreachable agent aborts the session itself once it idles past its timeout.
			m.rep.Warnings = append(m.rep.Warnings, fmt.Sprintf("the agent did not confirm the abort (it drops the session after %s idle): %v", m.session.Timeout, err))
		}
	}
	if m.paused {
		if err := m.task.Resume(ctx); err != nil {
			errs = append(errs, fmt.Errorf("thaw the source: %w", err))
		} else {
			m.paused = false
		}
	}
	if m.labeled && !m.paused {
		if err := m.setMigratingLabel(ctx, ""); err != nil {
			errs = append(errs, err)
		}
	}
	if m.prepared && m.app != nil {
		if err := m.app.Abort(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tell the source application to carry on: %w", err))
		}
	} else if m.prepared {
		if err := m.o.Hook.Abort(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tell the source application to carry on: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (m *run) cleanup(ctx context.Context) {
	if m.ckptRef != "" {
		_ = m.client.ImageService().Delete(ctx, m.ckptRef)
	}
	if m.workDir != "" {
		_ = os.RemoveAll(m.workDir)
	}
}

// MigratingLabel marks a source container from its freeze to commit or rollback; its value is
// the target agent's address.
const MigratingLabel = "ftwin-migrate.dev/migrating-to"

// setMigratingLabel sets (or with target "", removes) MigratingLabel on the source container.
func (m *run) setMigratingLabel(ctx context.Context, target string) error {
	c, err := m.client.LoadContainer(ctx, m.o.Container)
	if err == nil {
		_, err = c.SetLabels(ctx, map[string]string{MigratingLabel: target})
	}
	if err != nil {
		return fmt.Errorf("label the source container: %w", err)
	}
	return nil
}

// PhaseError says which phase failed.
type PhaseError struct {
	Phase Phase
	Err   error
}

func (e *PhaseError) Error() string { return fmt.Sprintf("%s: %v", e.Phase, e.Err) }
func (e *PhaseError) Unwrap() error { return e.Err }
