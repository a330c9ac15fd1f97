// Package restore starts containers from checkpoint images made by package checkpoint.
//
// The base image named in the checkpoint must be present in the target containerd (package
// transfer sends it along with the checkpoint when it is not). A failed restore removes what
// it created: the container record, its snapshot and any task.
package restore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Result describes a restored container.
type Result struct {
	Container containerd.Container
	Task      containerd.Task
	// Duration is the wall time from container creation to the task running.
	Duration time.Duration
	// CRIU is CRIU's restore statistics (restore_time, forking_time, pages_restored, ...),
	// when WithCRIUWorkPath kept them.
	CRIU *stats.RestoreStatsEntry
}

type config struct {
	io        cio.Creator
	workPath  string
	imagePath string
	specEdits []func(*specs.Spec) error
	runtime   string
	labels    map[string]string
}

// WithRuntime runs the restored container under runtime name (such as io.containerd.runc.v2)
// with no runtime options, instead of the runtime and options recorded in the checkpoint: a
// target that does not trust the source chooses its own.
func WithRuntime(name string) Opt { return func(cfg *config) { cfg.runtime = name } }

// WithLabels adds labels to the restored container record.
func WithLabels(labels map[string]string) Opt {
	return func(cfg *config) {
		if cfg.labels == nil {
			cfg.labels = map[string]string{}
		}
		maps.Copy(cfg.labels, labels)
	}
}

// Opt configures Restore.
type Opt func(*config)

// WithIO sets the restored task's stdio. Default: discard (cio.NullIO).
// Log paths must be visible in the target daemon's mount namespace.
func WithIO(c cio.Creator) Opt { return func(cfg *config) { cfg.io = c } }

// WithSpecEdit changes the container's OCI spec (as checkpointed) before the container is created.
func WithSpecEdit(edit func(*specs.Spec) error) Opt {
	return func(cfg *config) { cfg.specEdits = append(cfg.specEdits, edit) }
}

// WithNetworkNamespace puts the restored container in the network namespace at path (one this
// host made for it: a source host's path means nothing here), or, with "", in a new one of its
// own. runc hands the namespace to CRIU as the external one the dump recorded.
func WithNetworkNamespace(path string) Opt {
	return WithSpecEdit(func(s *specs.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = path
				return nil
			}
		}
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: path})
		return nil
	})
}

// WithCgroupsPath puts the restored container at path in the cgroup hierarchy instead of the
// source's path (needed when source and target share a machine, as simulated hosts do).
func WithCgroupsPath(path string) Opt {
	return WithSpecEdit(func(s *specs.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		s.Linux.CgroupsPath = path
		return nil
	})
}

// WithLogFile sends the restored task's stdout and stderr to path (created if needed), which
// must be visible in the target daemon's mount namespace.
func WithLogFile(path string) Opt {
	return func(cfg *config) { cfg.io = cio.LogFile(path) }
}

// WithCRIUConfigFile has runc pass CRIU the options in file path (one per line, such as
// tcp-close): runc lacks flags for several CRIU options and reads them from the container's
// org.criu.config annotation.
func WithCRIUConfigFile(path string) Opt {
	return WithSpecEdit(func(s *specs.Spec) error {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["org.criu.config"] = path
		return nil
	})
}

// TCPMode says what becomes of a restored container's established TCP connections.
type TCPMode string

// The TCP modes.
const (
	// TCPClose restores them closed: the application gets an error and reconnects (the target
	// host has another address). The default.
	TCPClose TCPMode = "close"
	// TCPEstablished restores them open; only for a target with the source's address.
	TCPEstablished TCPMode = "established"
)

// ParseTCPMode reads a TCP mode as a flag gives it; "" is TCPClose.
func ParseTCPMode(s string) (TCPMode, error) {
	switch m := TCPMode(s); m {
	case "":
		return TCPClose, nil
	case TCPClose, TCPEstablished:
		return m, nil
	}
	return "", fmt.Errorf("TCP mode %q: want %q (clients reconnect; another host) or %q (same address)", s, TCPClose, TCPEstablished)
}

// criuOption is the CRIU option of the mode.
func (m TCPMode) criuOption() string {
	return map[TCPMode]string{TCPClose: "tcp-close", TCPEstablished: "tcp-established"}[m]
}

// WithTCP restores established TCP connections as mode says (TCPClose or TCPEstablished),
// through a CRIU configuration file it keeps in dir (runc has no --tcp-close flag). The file
// stays: the container's spec names it for as long as the container lives.
func WithTCP(mode TCPMode, dir string) (Opt, error) {
	opt := mode.criuOption()
	if opt == "" {
		return nil, fmt.Errorf("restore: TCP mode %q: want %q or %q", mode, TCPClose, TCPEstablished)
	}
	path := filepath.Join(dir, "criu-tcp-"+string(mode)+".conf")
	if err := os.WriteFile(path, []byte(opt+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("restore: write CRIU config: %w", err)
	}
	return WithCRIUConfigFile(path), nil
}

// WithCRIUWorkPath has CRIU keep its restore log and statistics in dir (which must exist and
// be visible in the target daemon's mount namespace); Result.CRIU is then filled.
func WithCRIUWorkPath(dir string) Opt { return func(cfg *config) { cfg.workPath = dir } }

// WithCRIUImagePath restores from the CRIU image in directory dir (see
// checkpoint.WithImagePath) instead of the image in the checkpoint's content.
func WithCRIUImagePath(dir string) Opt { return func(cfg *config) { cfg.imagePath = dir } }

// Restore creates container id on client from checkpoint image ref and starts its task from
// the CRIU image. The checkpoint image must already be in client's containerd.
func Restore(ctx context.Context, client *containerd.Client, id, ref string, opts ...Opt) (res *Result, err error) {
	cfg := config{io: cio.NullIO}
	for _, o := range opts {
		o(&cfg)
	}
	start := time.Now()
	ckpt, err := client.GetImage(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("restore: checkpoint image %q: %w", ref, err)
	}
	index, err := readIndex(ctx, client, ckpt)
	if err != nil {
		return nil, err
	}
	if _, err := client.LoadContainer(ctx, id); err == nil {
		return nil, fmt.Errorf("restore: container %q already exists on the target: %w", id, errdefs.ErrAlreadyExists)
	}
	copts := []containerd.RestoreOpts{containerd.WithRestoreImage, containerd.WithRestoreSpec}
	if cfg.runtime != "" {
		copts = append(copts, withRuntime(cfg.runtime))
	} else {
		copts = append(copts, containerd.WithRestoreRuntime)
	}
	if len(cfg.labels) > 0 {
		copts = append(copts, func(context.Context, string, *containerd.Client, containerd.Image, *ocispec.Index) containerd.NewContainerOpts {
			return containerd.WithAdditionalContainerLabels(cfg.labels)
		})
	}
	if len(cfg.specEdits) > 0 {
		copts = append(copts, editSpec(cfg.specEdits))
	}
	if _, err := containerd.GetIndexByMediaType(index, ocispec.MediaTypeImageLayerGzip); err == nil {
		copts = append(copts, containerd.WithRestoreRW)
	}
	c, err := client.Restore(ctx, id, ckpt, copts...)
	if err != nil {
		// WithRestoreImage may have prepared the snapshot before a later option failed.
		_ = client.SnapshotService(index.Annotations["io.containerd.checkpoint.snapshotter"]).Remove(ctx, id)
		return nil, fmt.Errorf("restore: create container %q from %s: %w", id, ref, err)
	}
	defer func() {
		if err != nil {
			_ = c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
		}
	}()
	var topts []containerd.NewTaskOpts
	if cfg.imagePath == "" {
		topts = append(topts, containerd.WithTaskCheckpoint(ckpt))
	}
	if cfg.workPath != "" || cfg.imagePath != "" {
		o, err := withCRIUPaths(ctx, c, cfg.workPath, cfg.imagePath)
		if err != nil {
			return nil, err
		}
		topts = append(topts, o)
	}
	task, err := c.NewTask(ctx, cfg.io, topts...)
	if err != nil {
		return nil, fmt.Errorf("restore: CRIU restore of %q: %w%s", id, err, criuLog(cfg.workPath))
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		return nil, fmt.Errorf("restore: start restored task of %q: %w%s", id, err, criuLog(cfg.workPath))
	}
	res = &Result{Container: c, Task: task, Duration: time.Since(start)}
	if cfg.workPath != "" {
		if f, err := os.Open(cfg.workPath); err == nil {
			res.CRIU, _ = stats.CriuGetRestoreStats(f)
			f.Close()
		}
	}
	return res, nil
}

// criuLogLines is how many lines of CRIU's restore log a failed restore's error carries.
const criuLogLines = 12

// criuLog names CRIU's restore log in workPath and quotes its last lines (its errors are
// there), for the error of a failed restore; "" without a work path or log.
func criuLog(workPath string) string {
	if workPath == "" {
		return ""
	}
	path := filepath.Join(workPath, "restore.log")
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > criuLogLines {
		lines = lines[len(lines)-criuLogLines:]
	}
	return fmt.Sprintf("; CRIU's restore log %s ends:\n\t%s", path, strings.Join(lines, "\n\t"))
}

// withCRIUPaths sets the runc shim's CRIU work and image paths for the restore, keeping the
// container's other runtime options (task options replace them).
func withCRIUPaths(ctx context.Context, c containerd.Container, workPath, imagePath string) (containerd.NewTaskOpts, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore: container info: %w", err)
	}
	opts := &options.Options{}
	if info.Runtime.Options != nil && info.Runtime.Options.GetValue() != nil {
		if err := typeurl.UnmarshalTo(info.Runtime.Options, opts); err != nil {
			return nil, fmt.Errorf("restore: runtime options of %s are not runc's: %w", c.ID(), err)
		}
	}
	opts.CriuWorkPath, opts.CriuImagePath = workPath, imagePath
	return func(_ context.Context, _ *containerd.Client, ti *containerd.TaskInfo) error {
		ti.Options = opts
		return nil
	}, nil
}

func readIndex(ctx context.Context, client *containerd.Client, ckpt containerd.Image) (*ocispec.Index, error) {
	var index ocispec.Index
	b, err := content.ReadBlob(ctx, client.ContentStore(), ckpt.Target())
	if err != nil {
		return nil, fmt.Errorf("restore: read checkpoint index %s: %w", ckpt.Target().Digest, err)
	}
	if err := json.Unmarshal(b, &index); err != nil {
		return nil, fmt.Errorf("restore: parse checkpoint index %s: %w", ckpt.Target().Digest, err)
	}
	return &index, nil
}

func withRuntime(name string) containerd.RestoreOpts {
	return func(context.Context, string, *containerd.Client, containerd.Image, *ocispec.Index) containerd.NewContainerOpts {
		return func(_ context.Context, _ *containerd.Client, c *containers.Container) error {
			c.Runtime = containers.RuntimeInfo{Name: name}
			return nil
		}
	}
}

func editSpec(edits []func(*specs.Spec) error) containerd.RestoreOpts {
	return func(context.Context, string, *containerd.Client, containerd.Image, *ocispec.Index) containerd.NewContainerOpts {
		return func(_ context.Context, _ *containerd.Client, c *containers.Container) error {
			return applySpecEdits(c, edits)
		}
	}
}

func applySpecEdits(c *containers.Container, edits []func(*specs.Spec) error) error {
	v, err := typeurl.UnmarshalAny(c.Spec)
	if err != nil {
		return fmt.Errorf("decode checkpointed spec: %w", err)
	}
	s, ok := v.(*specs.Spec)
	if !ok {
		return fmt.Errorf("checkpointed spec is %T, not an OCI runtime spec", v)
	}
	for _, e := range edits {
		if err := e(s); err != nil {
			return err
		}
	}
	a, err := typeurl.MarshalAny(s)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	c.Spec = a
	return nil
}
