package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ftwin-migrate/ftwin-migrate/ociimage"
)

// Namespace is the containerd namespace lab workloads live in.
const Namespace = "ftwin"

// Context returns ctx in the lab's containerd namespace.
func Context(ctx context.Context) context.Context { return namespaces.WithNamespace(ctx, Namespace) }

// Workload is a container to run on a lab host from a static binary.
type Workload struct {
	// ID is the container id.
	ID string
	// Binary is a static executable; it becomes the image's only file, /bin/BASENAME.
	Binary string
	// Image is the image reference. Default: "ftwin.local/BASENAME:latest".
	Image string
	// Args follow the binary on the command line.
	Args []string
	// Env is added to the process's environment (KEY=VALUE).
	Env []string
	// SpecOpts change the container's spec after the lab's own options.
	SpecOpts []oci.SpecOpts
	// OwnAddress gives the container a network namespace of its own with an address of the
	// lab network (the lowest free of .100–.249) instead of its host's network: the address
	// moves with it (see network.go), so its TCP connections survive a move (Move restores
	// them established). Default: the host's network namespace and address, and connections
	// restored closed.
	OwnAddress bool
}

// LogPath is where the stdout and stderr of container id on this host go.
func (h *Host) LogPath(id string) string { return filepath.Join(h.Dir, "logs", id+".log") }

// LogIO returns the stdio for container id: its log file on this host.
func (h *Host) LogIO(id string) (cio.Creator, error) {
	p := h.LogPath(id)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("lab: create log directory: %w", err)
	}
	return cio.LogFile(p), nil
}

// ImportImage builds the workload's image into the host's containerd (a no-op when present).
func (h *Host) ImportImage(ctx context.Context, w Workload) (string, error) {
	ref := w.imageRef()
	client, err := h.Client()
	if err != nil {
		return "", err
	}
	defer client.Close()
	if _, err := ociimage.Build(Context(ctx), client, ref, w.Binary); err != nil {
		return "", fmt.Errorf("lab: host %s: %w", h.Name, err)
	}
	return ref, nil
}

func (w Workload) imageRef() string {
	if w.Image != "" {
		return w.Image
	}
	return "ftwin.local/" + filepath.Base(w.Binary) + ":latest"
}

// Run starts w as a container on the host, in the host's network namespace (or one of its own:
// Workload.OwnAddress), its output in LogPath(w.ID). The image is built and imported first if needed.
func (h *Host) Run(ctx context.Context, w Workload) (err error) {
	ref, err := h.ImportImage(ctx, w)
	if err != nil {
		return err
	}
	client, err := h.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx = Context(ctx)
	img, err := client.GetImage(ctx, ref)
	if err != nil {
		return fmt.Errorf("lab: host %s: image %s: %w", h.Name, ref, err)
	}
	args := append([]string{"/bin/" + filepath.Base(w.Binary)}, w.Args...)
	opts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(args...), oci.WithEnv(w.Env),
		oci.WithCgroup(h.CgroupsPath(Namespace, w.ID))}
	labels := map[string]string{}
	if w.OwnAddress {
		var n ContainerNet
		if n, err = h.allocateAddress(w.ID); err != nil {
			return err
		}
		var nsPath string
		if nsPath, err = h.plumbContainer(ctx, w.ID, n, true); err != nil {
			releaseAddress(h.labDir(), n)
			return err
		}
		defer func() {
			if err != nil {
				_ = h.unplumbContainer(context.WithoutCancel(ctx), w.ID)
				releaseAddress(h.labDir(), n)
			}
		}()
		labels = n.Labels()
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: nsPath}))
	} else {
		criuConfig, err := h.criuTCPCloseConfig()
		if err != nil {
			return err
		}
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace),
			oci.WithAnnotations(map[string]string{"org.criu.config": criuConfig}))
	}
	c, err := client.NewContainer(ctx, w.ID,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(w.ID+"-rootfs", img),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(append(opts, w.SpecOpts...)...),
	)
	if err != nil {
		return fmt.Errorf("lab: host %s: create container %s: %w", h.Name, w.ID, err)
	}
	io, err := h.LogIO(w.ID)
	if err != nil {
		return err
	}
	task, err := c.NewTask(ctx, io)
	if err != nil {
		_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
		return fmt.Errorf("lab: host %s: create task %s: %w", h.Name, w.ID, err)
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
		return fmt.Errorf("lab: host %s: start %s: %w", h.Name, w.ID, err)
	}
	return nil
}

// criuTCPCloseConfig returns a CRIU configuration file on the host that says tcp-close, which
// lab containers name in their org.criu.config annotation (runc reads it at every dump and
// restore): their dumps then neither lock the network nor record TCP state — restores close
// the connections anyway (restore.TCPClose) — as for the copies the agents restore, which carry
// the same option. Without it CRIU's first dump of a container locks each connection with
// iptables while the task is frozen (measured on this lab at 16 MiB: 288 ms of CRIU frozen
// time, against 52–65 ms with tcp-close).
func (h *Host) criuTCPCloseConfig() (string, error) {
	path := filepath.Join(h.Dir, "criu-tcp-close.conf")
	if err := os.WriteFile(path, []byte("tcp-close\n"), 0o644); err != nil {
		return "", fmt.Errorf("lab: host %s: write %s: %w", h.Name, path, err)
	}
	return path, nil
}

// Remove kills container id's task (if any) and deletes the container with its snapshot.
func (h *Host) Remove(ctx context.Context, id string) error {
	client, err := h.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx = Context(ctx)
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("lab: host %s: container %s: %w", h.Name, id, err)
	}
	if task, err := c.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
			return fmt.Errorf("lab: host %s: delete task %s: %w", h.Name, id, err)
		}
	}
	labels, _ := c.Labels(ctx)
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("lab: host %s: delete container %s: %w", h.Name, id, err)
	}
	if _, own, _ := ContainerNetFromLabels(labels); own {
		// The address stays reserved: the container may live on elsewhere (a move's source).
		return h.unplumbContainer(ctx, id)
	}
	return nil
}
