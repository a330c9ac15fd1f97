package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"

	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// Source is the host a container leaves: what the pipeline does to the container there. Its
// containerd implementation is NewContainerdSource; tests give the pipeline fakes.
type Source interface {
	// Running describes the container's running task; an error when the container or its
	// running task is missing.
	Running(ctx context.Context) (TaskInfo, error)
	// CPUInfo returns CRIU's description of this host's CPU (cpuinfo.img), for the target's
	// `criu cpuinfo check`.
	CPUInfo(ctx context.Context) ([]byte, error)
	// SetMigrating records target in the container's MigratingLabel ("" removes it), so that a
	// migrator that dies leaves a container Recover can settle.
	SetMigrating(ctx context.Context, target string) error
	// Freeze pauses the task; Thaw resumes it.
	Freeze(ctx context.Context) error
	Thaw(ctx context.Context) error
	// Checkpoint dumps the frozen task with CRIU, leaving it frozen: the CRIU image into
	// imageDir, CRIU's work files (statistics, log) into workDir, the checkpoint index as the
	// image ref.
	Checkpoint(ctx context.Context, ref, workDir, imageDir string) (*checkpoint.Result, error)
	// Content reads the blobs of the checkpoint index.
	Content(ctx context.Context) content.Provider
	// DeleteCheckpoint removes the checkpoint image ref; a missing one is no error.
	DeleteCheckpoint(ctx context.Context, ref string) error
	// Remove kills the (frozen) task and deletes the container with its snapshot.
	Remove(ctx context.Context) error
}

// TaskInfo describes the source's running task.
type TaskInfo struct {
	// Pid is the task's init process.
	Pid uint32
	// ResidentBytes is its resident memory (0 when unknown).
	ResidentBytes int64
}

// NewContainerdSource returns the Source for container id of client; ctx of every call must
// carry the container's namespace.
func NewContainerdSource(client *containerd.Client, id string) Source {
	return &containerdSource{client: client, id: id}
}

type containerdSource struct {
	client *containerd.Client
	id     string
}

func (s *containerdSource) task(ctx context.Context) (containerd.Container, containerd.Task, error) {
	c, err := s.client.LoadContainer(ctx, s.id)
	if err != nil {
		return nil, nil, fmt.Errorf("container %q: %w", s.id, err)
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return c, nil, fmt.Errorf("container %q has no task: %w", s.id, err)
	}
	return c, t, nil
}

func (s *containerdSource) Running(ctx context.Context) (TaskInfo, error) {
	_, t, err := s.task(ctx)
	if err != nil {
		return TaskInfo{}, err
	}
	st, err := t.Status(ctx)
	if err != nil {
		return TaskInfo{}, fmt.Errorf("status of %q: %w", s.id, err)
	}
	if st.Status != containerd.Running {
		return TaskInfo{}, fmt.Errorf("task of %q is %s, not running", s.id, st.Status)
	}
	rss, _ := residentBytes(t.Pid())
	return TaskInfo{Pid: t.Pid(), ResidentBytes: rss}, nil
}

func (s *containerdSource) CPUInfo(ctx context.Context) ([]byte, error) {
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

func (s *containerdSource) SetMigrating(ctx context.Context, target string) error {
	c, err := s.client.LoadContainer(ctx, s.id)
	if err == nil {
		_, err = c.SetLabels(ctx, map[string]string{MigratingLabel: target})
	}
	if err != nil {
		return fmt.Errorf("label the source container %q: %w", s.id, err)
	}
	return nil
}

func (s *containerdSource) Freeze(ctx context.Context) error {
	_, t, err := s.task(ctx)
	if err == nil {
		err = t.Pause(ctx)
	}
	if err != nil {
		return fmt.Errorf("freeze %s: %w", s.id, err)
	}
	return nil
}

func (s *containerdSource) Thaw(ctx context.Context) error {
	_, t, err := s.task(ctx)
	if err == nil {
		err = t.Resume(ctx)
	}
	if err != nil {
		return fmt.Errorf("thaw %s: %w", s.id, err)
	}
	return nil
}

func (s *containerdSource) Checkpoint(ctx context.Context, ref, workDir, imageDir string) (*checkpoint.Result, error) {
	return checkpoint.Checkpoint(ctx, s.client, s.id, checkpoint.WithRef(ref),
		checkpoint.WithTCPEstablished(), checkpoint.WithWorkPath(workDir), checkpoint.WithImagePath(imageDir))
}

func (s *containerdSource) Content(ctx context.Context) content.Provider {
	return transfer.ContentProvider(ctx, s.client)
}

func (s *containerdSource) DeleteCheckpoint(ctx context.Context, ref string) error {
	if err := s.client.ImageService().Delete(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete checkpoint image %s: %w", ref, err)
	}
	return nil
}

func (s *containerdSource) Remove(ctx context.Context) error {
	c, t, err := s.task(ctx)
	if err != nil {
		return err
	}
	// The source stays frozen until it is gone: it must never run beside the target.
	if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil {
		return fmt.Errorf("remove the frozen source task (it stays frozen; remove it by hand): %w", err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("remove the source container record: %w", err)
	}
	return nil
}
