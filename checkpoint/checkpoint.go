// Package checkpoint takes CRIU checkpoints of running containerd containers.
//
// A checkpoint is recorded as a checkpoint image in the container's containerd: an OCI index
// whose entries are the CRIU image (a tar), the container's spec, its runtime options, its
// read-write layer and the base image's manifest. Package transfer moves it to another host;
// package restore starts it there.
package checkpoint

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
)

// Result describes a checkpoint just taken.
type Result struct {
	// Ref is the name of the checkpoint image in the source containerd.
	Ref string
	// Target is the checkpoint index's descriptor.
	Target ocispec.Descriptor
	// Duration is the wall time of the checkpoint call (CRIU dump plus writing the image).
	Duration time.Duration
	// LeftRunning says whether the task kept running after the dump.
	LeftRunning bool
	// CRIU is CRIU's dump statistics (nil if CRIU wrote none).
	CRIU *stats.DumpStatsEntry
}

type config struct {
	ref       string
	exit      bool
	openTCP   bool
	rw        bool
	imagePath string
	workPath  string
}

// Opt configures Checkpoint.
type Opt func(*config)

// WithRef names the checkpoint image. Default: "checkpoint/ID:UNIXNANO".
func WithRef(ref string) Opt { return func(c *config) { c.ref = ref } }

// WithExit stops the task once the dump is written (the migration's source stays frozen
// otherwise only for the dump itself). Default: leave it running.
func WithExit() Opt { return func(c *config) { c.exit = true } }

// WithTCPEstablished dumps established TCP connections (CRIU --tcp-established).
func WithTCPEstablished() Opt { return func(c *config) { c.openTCP = true } }

// WithoutRW leaves the container's read-write layer out of the checkpoint.
func WithoutRW() Opt { return func(c *config) { c.rw = false } }

// WithImagePath has CRIU write its image into dir (visible in the daemon's mount namespace)
// instead of the checkpoint image in the content store: the checkpoint index then holds the
// container's spec, runtime options and read-write layer only, and the image directory is moved
// on its own (transfer.PushDir) and restored with restore.WithCRIUImagePath. This skips
// containerd packing the image into its content store and unpacking it again on restore.
func WithImagePath(dir string) Opt { return func(c *config) { c.imagePath = dir } }

// WithWorkPath keeps CRIU's work directory (dump.log, stats-dump) in dir, which must be
// visible in the daemon's mount namespace.
func WithWorkPath(dir string) Opt { return func(c *config) { c.workPath = dir } }

// Checkpoint dumps the running task of container id and records it as a checkpoint image.
func Checkpoint(ctx context.Context, client *containerd.Client, id string, opts ...Opt) (*Result, error) {
	cfg := config{rw: true}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.ref == "" {
		cfg.ref = fmt.Sprintf("checkpoint/%s:%d", id, time.Now().UnixNano())
	}
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: container %q: %w", id, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: container %q has no running task: %w", id, err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: status of %q: %w", id, err)
	}
	// A paused task can be dumped too (the migrator freezes before it dumps); it stays paused.
	if st.Status != containerd.Running && st.Status != containerd.Paused {
		return nil, fmt.Errorf("checkpoint: task of %q is %s, not running", id, st.Status)
	}

	// CRIU leaves its statistics in its work directory: keep one to read them.
	if cfg.workPath == "" {
		if cfg.workPath, err = os.MkdirTemp("", "ftwin-criu-work-"); err != nil {
			return nil, fmt.Errorf("checkpoint: CRIU work directory: %w", err)
		}
		defer os.RemoveAll(cfg.workPath)
	}
	// Options run in order: the runc options must be set before WithCheckpointTask reads them.
	copts := []containerd.CheckpointOpts{withRuncOptions(cfg), containerd.WithCheckpointImage, containerd.WithCheckpointRuntime}
	if cfg.rw {
		copts = append(copts, containerd.WithCheckpointRW)
	}
	copts = append(copts, containerd.WithCheckpointTask)
	if cfg.imagePath != "" {
		// containerd adds the spec only beside an image it packs itself.
		copts = append(copts, withSpec)
	}

	start := time.Now()
	img, err := c.Checkpoint(ctx, cfg.ref, copts...)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: dump of %q failed (the task keeps running): %w", id, err)
	}
	res := &Result{Ref: img.Name(), Target: img.Target(), Duration: time.Since(start), LeftRunning: !cfg.exit}
	res.CRIU, _ = DumpStats(ctx, client.ContentStore(), res.Target, cfg.workPath)
	return res, nil
}

func withRuncOptions(cfg config) containerd.CheckpointOpts {
	return func(_ context.Context, _ *containerd.Client, _ *containers.Container, _ *ocispec.Index, o *options.CheckpointOptions) error {
		o.Exit = cfg.exit
		o.OpenTcp = cfg.openTCP
		o.WorkPath = cfg.workPath
		o.ImagePath = cfg.imagePath
		return nil
	}
}

// withSpec records the container's spec in the checkpoint index, as containerd does when it
// packs the CRIU image into its content store.
func withSpec(ctx context.Context, client *containerd.Client, c *containers.Container, index *ocispec.Index, _ *options.CheckpointOptions) error {
	data, err := proto.Marshal(typeurl.MarshalProto(c.Spec))
	if err != nil {
		return fmt.Errorf("encode the container's spec: %w", err)
	}
	desc := ocispec.Descriptor{MediaType: images.MediaTypeContainerd1CheckpointConfig, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := content.WriteBlob(ctx, client.ContentStore(), c.ID+"-spec", bytes.NewReader(data), desc); err != nil {
		return fmt.Errorf("write the container's spec: %w", err)
	}
	index.Manifests = append(index.Manifests, desc)
	return nil
}

// Delete removes a checkpoint image from a containerd (its blobs go with the next GC).
func Delete(ctx context.Context, client *containerd.Client, ref string) error {
	if err := client.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		return fmt.Errorf("checkpoint: delete %s: %w", ref, err)
	}
	return nil
}
