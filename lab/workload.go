package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ftwin-migrate/ftwin-migrate/ociimage"
)

// Namespace is the containerd namespace lab workloads live in.
const Namespace = "ftwin"

// Context returns ctx in the lab's containerd namespace.
func Context(ctx context.Context) context.Context { return namespaces.WithNamespace(ctx, Namespace) }

// Workload is a container to run on a lab host, in the spirit of `nerdctl run`: from a static
// binary (Binary, the project's own workloads), from an image archive to import
// (ImageArchive), or from an image the host's containerd already holds (Image alone).
type Workload struct {
	// ID is the container id.
	ID string
	// Binary is a static executable; it becomes the image's only file, /bin/BASENAME, and its
	// entrypoint. Leave it empty to run an image (ImageArchive or Image).
	Binary string
	// ImageArchive is an image archive to import into the host's containerd before the run:
	// an OCI image layout in a tar (`ctr images export`, `nerdctl save`, ociimage.WriteArchive)
	// or a `docker save` tar. It must hold one image, or Image names the one to run.
	ImageArchive string
	// Image is the image reference. With Binary: the name the image is built under (default
	// "ftwin.local/BASENAME:latest"). With ImageArchive: which of its images to run (default:
	// its only one). Alone: an image already in the host's containerd, in namespace Namespace
	// (compared as Docker does: "kcat" is "docker.io/library/kcat:latest").
	Image string
	// Entrypoint, when set, replaces the image's entrypoint, and the image's Cmd is dropped
	// (as `nerdctl run --entrypoint`); Args follow it. Not with Binary.
	Entrypoint []string
	// Args follow the binary on the command line (Binary), or replace the image's Cmd after its
	// entrypoint (an image, as the arguments after the image in `nerdctl run IMAGE ARGS...`).
	Args []string
	// Env is added to the process's environment (KEY=VALUE), replacing the image's value of a
	// key it sets.
	Env []string
	// Mounts are bind mounts of host paths into the container. A migrated container needs the
	// same host paths on the target, and the target's agent must allow them
	// (`receive --allow-bind-mount`; `lab up --allow-bind-mount`).
	Mounts []Mount
	// WorkingDir, when set, replaces the image's working directory.
	WorkingDir string
	// SpecOpts change the container's spec after the lab's own options.
	SpecOpts []oci.SpecOpts
	// OwnAddress gives the container a network namespace of its own with an address of the
	// lab network (the lowest free of .100–.249) instead of its host's network: the address
	// moves with it (see network.go), so its TCP connections survive a move (Move restores
	// them established). Default: the host's network namespace and address, and connections
	// restored closed.
	OwnAddress bool
}

// Mount is a bind mount of a host path into a container.
type Mount struct {
	// Source is the host path (absolute; it must exist).
	Source string `json:"source"`
	// Destination is the path in the container (absolute).
	Destination string `json:"destination"`
	// ReadOnly mounts it read-only.
	ReadOnly bool `json:"read_only,omitempty"`
}

// ParseMount parses a bind mount as `docker run -v` and `nerdctl run -v` write it:
// SRC:DST[:ro|rw], both paths absolute; SRC must exist.
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Mount{}, fmt.Errorf("mount %q: want HOST-PATH:CONTAINER-PATH[:ro|rw]", s)
	}
	m := Mount{Source: parts[0], Destination: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return Mount{}, fmt.Errorf("mount %q: option %q: want ro or rw", s, parts[2])
		}
	}
	if err := m.check(); err != nil {
		return Mount{}, err
	}
	return m, nil
}

func (m Mount) check() error {
	if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Destination) {
		return fmt.Errorf("mount %s:%s: both paths must be absolute", m.Source, m.Destination)
	}
	if _, err := os.Stat(m.Source); err != nil {
		return fmt.Errorf("mount %s:%s: host path: %w", m.Source, m.Destination, err)
	}
	return nil
}

func (m Mount) spec() specs.Mount {
	opts := []string{"rbind", "rw"}
	if m.ReadOnly {
		opts = []string{"rbind", "ro"}
	}
	return specs.Mount{Type: "bind", Source: filepath.Clean(m.Source), Destination: filepath.Clean(m.Destination), Options: opts}
}

// check says what is wrong with w before anything is imported or created.
func (w Workload) check() error {
	switch {
	case w.Binary != "" && w.ImageArchive != "":
		return fmt.Errorf("lab: workload %s: a binary or an image archive, not both", w.ID)
	case w.Binary == "" && w.ImageArchive == "" && w.Image == "":
		return fmt.Errorf("lab: workload %s: no binary, image archive or image to run", w.ID)
	case w.Binary != "" && len(w.Entrypoint) > 0:
		return fmt.Errorf("lab: workload %s: an entrypoint replaces an image's; a binary's arguments go in Args", w.ID)
	}
	for _, p := range []string{w.Binary, w.ImageArchive} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err != nil {
			return fmt.Errorf("lab: workload %s: %w", w.ID, err)
		} else if !fi.Mode().IsRegular() {
			return fmt.Errorf("lab: workload %s: %s is not a regular file", w.ID, p)
		}
	}
	for _, m := range w.Mounts {
		if err := m.check(); err != nil {
			return fmt.Errorf("lab: workload %s: %w", w.ID, err)
		}
	}
	if w.WorkingDir != "" && !filepath.IsAbs(w.WorkingDir) {
		return fmt.Errorf("lab: workload %s: working directory %q must be absolute", w.ID, w.WorkingDir)
	}
	return nil
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

// ImportImage makes the workload's image present in the host's containerd and returns its
// name: it builds the binary's image (a no-op when present), imports the image archive, or
// checks that the host holds the image. Every host a workload may move to needs its image (a
// migration does not carry it), as hosts pulling from one registry would have it.
func (h *Host) ImportImage(ctx context.Context, w Workload) (string, error) {
	if err := w.check(); err != nil {
		return "", err
	}
	client, err := h.Client()
	if err != nil {
		return "", err
	}
	defer client.Close()
	img, err := h.image(Context(ctx), client, w)
	if err != nil {
		return "", err
	}
	return img.Name(), nil
}

func (h *Host) image(ctx context.Context, client *containerd.Client, w Workload) (containerd.Image, error) {
	switch {
	case w.Binary != "":
		img, err := ociimage.Build(ctx, client, w.imageRef(), w.Binary)
		if err != nil {
			return nil, fmt.Errorf("lab: host %s: %w", h.Name, err)
		}
		return img, nil
	case w.ImageArchive != "":
		img, err := ociimage.ImportArchive(ctx, client, w.ImageArchive, w.Image)
		if err != nil {
			return nil, fmt.Errorf("lab: host %s: %w", h.Name, err)
		}
		return img, nil
	}
	img, err := client.GetImage(ctx, w.Image)
	if errdefs.IsNotFound(err) && ociimage.NormalizeRef(w.Image) != w.Image {
		img, err = client.GetImage(ctx, ociimage.NormalizeRef(w.Image))
	}
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("lab: host %s has no image %s in namespace %s: import it there first "+
			"(`ctr -a %s -n %s images import FILE`) or give its archive (--image-archive)", h.Name, w.Image, Namespace, h.Address(), Namespace)
	} else if err != nil {
		return nil, fmt.Errorf("lab: host %s: image %s: %w", h.Name, w.Image, err)
	}
	if err := img.Unpack(ctx, ociimage.DefaultSnapshotter); err != nil {
		return nil, fmt.Errorf("lab: host %s: unpack image %s into %s: %w", h.Name, img.Name(), ociimage.DefaultSnapshotter, err)
	}
	return img, nil
}

func (w Workload) imageRef() string {
	if w.Image != "" {
		return w.Image
	}
	return "ftwin.local/" + filepath.Base(w.Binary) + ":latest"
}

// processOpts set the process's command line, environment, working directory and mounts from
// the image's config and w.
func (w Workload) processOpts(img containerd.Image) []oci.SpecOpts {
	var opts []oci.SpecOpts
	switch {
	case w.Binary != "":
		opts = append(opts, oci.WithImageConfig(img), oci.WithProcessArgs(append([]string{"/bin/" + filepath.Base(w.Binary)}, w.Args...)...))
	case len(w.Entrypoint) > 0:
		opts = append(opts, oci.WithImageConfig(img), oci.WithProcessArgs(append(slices.Clone(w.Entrypoint), w.Args...)...))
	default:
		opts = append(opts, oci.WithImageConfigArgs(img, w.Args))
	}
	opts = append(opts, oci.WithEnv(w.Env))
	if w.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(w.WorkingDir))
	}
	if len(w.Mounts) > 0 {
		var mounts []specs.Mount
		for _, m := range w.Mounts {
			mounts = append(mounts, m.spec())
		}
		opts = append(opts, oci.WithMounts(mounts))
	}
	return opts
}

// Run starts w as a container on the host, in the host's network namespace (or one of its own:
// Workload.OwnAddress), its output in LogPath(w.ID). The image is built or imported first if
// needed (see ImportImage).
func (h *Host) Run(ctx context.Context, w Workload) (err error) {
	if err := w.check(); err != nil {
		return err
	}
	client, err := h.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx = Context(ctx)
	if _, err := client.LoadContainer(ctx, w.ID); err == nil {
		return fmt.Errorf("lab: host %s already has a container %s (namespace %s): choose another id, or remove it (Host.Remove)", h.Name, w.ID, Namespace)
	}
	img, err := h.image(ctx, client, w)
	if err != nil {
		return err
	}
	opts := append(w.processOpts(img), oci.WithCgroup(h.CgroupsPath(Namespace, w.ID)))
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
		containerd.WithSnapshotter(ociimage.DefaultSnapshotter),
		containerd.WithNewSnapshot(w.ID+"-rootfs", img),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(append(opts, w.SpecOpts...)...),
	)
	if err != nil {
		return fmt.Errorf("lab: host %s: create container %s: %w", h.Name, w.ID, err)
	}
	if s, err := c.Spec(ctx); err == nil && (s.Process == nil || len(s.Process.Args) == 0) {
		_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
		return fmt.Errorf("lab: host %s: container %s has no command: image %s has no entrypoint or cmd; give one (Entrypoint, Args; `lab run ... -- CMD`)", h.Name, w.ID, img.Name())
	}
	io, err := h.LogIO(w.ID)
	if err != nil {
		_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
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

// CopyImage copies image ref from this host's containerd to host to's (namespace Namespace),
// as two hosts pulling it from one registry would both hold it. A host that holds it already
// gets nothing new.
func (h *Host) CopyImage(ctx context.Context, ref string, to *Host) error {
	from, err := h.Client()
	if err != nil {
		return err
	}
	defer from.Close()
	dst, err := to.Client()
	if err != nil {
		return err
	}
	defer dst.Close()
	ctx = Context(ctx)
	if img, err := dst.GetImage(ctx, ref); err == nil {
		if src, err := from.GetImage(ctx, ref); err == nil && src.Target().Digest == img.Target().Digest {
			return img.Unpack(ctx, ociimage.DefaultSnapshotter)
		}
	}
	if _, err := ociimage.Copy(ctx, from, dst, ref); err != nil {
		return fmt.Errorf("lab: host %s → %s: %w", h.Name, to.Name, err)
	}
	return nil
}
