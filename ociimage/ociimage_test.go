package ociimage_test

import (
	"context"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/ociimage"
)

const counterPkg = "github.com/ftwin-migrate/ftwin-migrate/test/workloads/counter"

func TestBuild(t *testing.T) {
	client := startContainerd(t)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "ociimage-test"), 2*time.Minute)
	defer cancel()
	bin := buildCounter(t)
	t.Cleanup(func() {
		// runc removes a container's cgroup but not its namespace's parent directory.
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/ociimage-test") // v1; v2 below
		dirs = append(dirs, "/sys/fs/cgroup/ociimage-test")
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	})

	t.Run("Idempotent", func(t *testing.T) {
		const ref = "localhost/ftwin/counter:idempotent"
		labels := map[string]string{"ftwin-migrate/test": "idempotent"}
		first, err := ociimage.Build(ctx, client, ref, bin, ociimage.WithLabels(labels))
		if err != nil {
			t.Fatal(err)
		}
		again, err := ociimage.Build(ctx, client, ref, bin, ociimage.WithLabels(labels))
		if err != nil {
			t.Fatal(err)
		}
		if first.Target().Digest != again.Target().Digest {
			t.Fatalf("rebuilding gave target %s, first build %s", again.Target().Digest, first.Target().Digest)
		}
		if got := again.Labels()["ftwin-migrate/test"]; got != "idempotent" {
			t.Fatalf("image label = %q, want %q", got, "idempotent")
		}
		if ok, err := again.IsUnpacked(ctx, ociimage.DefaultSnapshotter); err != nil || !ok {
			t.Fatalf("IsUnpacked = %v, %v; want true", ok, err)
		}

		// Read the first manifest's layers now: once the record points at
		// another manifest, containerd's garbage collector may drop this one
		// at any moment (it did, in CI: "content digest ...: not found").
		l1 := layers(ctx, t, first)

		// Another entrypoint under the same ref: a new config and manifest,
		// the same layer, and the record now points at the new manifest.
		changed, err := ociimage.Build(ctx, client, ref, bin, ociimage.WithEntrypoint("/bin/counter", "-mem-mib", "1"))
		if err != nil {
			t.Fatal(err)
		}
		if changed.Target().Digest == first.Target().Digest {
			t.Fatal("a different entrypoint gave the same manifest")
		}
		stored, err := client.GetImage(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Target().Digest != changed.Target().Digest {
			t.Fatalf("image record points at %s, want %s", stored.Target().Digest, changed.Target().Digest)
		}
		if l2 := layers(ctx, t, changed); len(l1) != 1 || len(l2) != 1 || l1[0].Digest != l2[0].Digest {
			t.Fatalf("layers %v and %v, want one shared layer", l1, l2)
		}
	})

	t.Run("SurvivesGarbageCollection", func(t *testing.T) {
		kept, err := ociimage.Build(ctx, client, "localhost/ftwin/counter:kept", bin)
		if err != nil {
			t.Fatal(err)
		}
		dropped, err := ociimage.Build(ctx, client, "localhost/ftwin/counter:dropped", bin, ociimage.WithEntrypoint("/bin/counter", "-seed", "2"))
		if err != nil {
			t.Fatal(err)
		}
		// A synchronous delete runs the garbage collector before returning.
		if err := client.ImageService().Delete(ctx, dropped.Name(), images.SynchronousDelete()); err != nil {
			t.Fatal(err)
		}
		if _, err := client.ContentStore().Info(ctx, dropped.Target().Digest); !errdefs.IsNotFound(err) {
			t.Fatalf("dropped manifest still present after GC (err %v): the collector did not run", err)
		}
		for _, d := range append(layers(ctx, t, kept), kept.Target()) {
			if _, err := client.ContentStore().Info(ctx, d.Digest); err != nil {
				t.Fatalf("blob %s of the kept image: %v", d.Digest, err)
			}
		}
		if ok, err := kept.IsUnpacked(ctx, ociimage.DefaultSnapshotter); err != nil || !ok {
			t.Fatalf("kept image IsUnpacked = %v, %v; want true", ok, err)
		}
		if _, err := kept.Spec(ctx); err != nil {
			t.Fatalf("kept image config: %v", err)
		}
	})

	t.Run("RunsCounter", func(t *testing.T) {
		addr := freeAddr(t)
		img, err := ociimage.Build(ctx, client, "localhost/ftwin/counter:run", bin,
			ociimage.WithEntrypoint("/bin/counter", "-mem-mib", "8", "-interval", "50ms", "-listen", addr))
		if err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(t.TempDir(), "counter.log")
		id := "counter-run"
		container, err := client.NewContainer(ctx, id,
			containerd.WithImage(img),
			containerd.WithSnapshotter(ociimage.DefaultSnapshotter),
			containerd.WithNewSnapshot(id, img),
			containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithHostNamespace(specs.NetworkNamespace)))
		if err != nil {
			t.Fatalf("create container: %v", err)
		}
		// A safety net for failures; after a clean run there is nothing left.
		t.Cleanup(func() { container.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup) })
		task, err := container.NewTask(ctx, cio.LogFile(logPath))
		if err != nil {
			t.Fatalf("create task: %v", err)
		}
		t.Cleanup(func() { task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill) })
		exited, err := task.Wait(ctx)
		if err != nil {
			t.Fatalf("wait task: %v", err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatalf("start task: %v", err)
		}

		s := waitState(t, logPath, func(s state.State) bool { return s.Tick >= 3 && s.MemOK })
		if s.PID != 1 || s.MemMiB != 8 {
			t.Fatalf("state %+v: want pid 1 (own PID namespace) and mem_mib 8", s)
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatalf("healthz over the host network: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz: %s", resp.Status)
		}

		if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
			t.Fatalf("kill task: %v", err)
		}
		select {
		case st := <-exited:
			if code, _, err := st.Result(); err != nil || code != 0 {
				t.Fatalf("exit after SIGTERM: status %d, %v; want 0", code, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("task did not exit within 10s of SIGTERM")
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Fatalf("delete task: %v", err)
		}
		if err := container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatalf("delete container: %v", err)
		}
	})
}

// TestArchive writes an image archive of a root filesystem, imports it into a containerd and
// runs a container from it: the entrypoint, Cmd, environment and working directory of the
// archive's config reach the process.
func TestArchive(t *testing.T) {
	client := startContainerd(t)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "ociimage-archive"), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/ociimage-archive") // v1; v2 below
		dirs = append(dirs, "/sys/fs/cgroup/ociimage-archive")
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	})
	root := t.TempDir()
	bin := buildCounter(t)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"app/bin", "work", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "app/bin/counter"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	const ref = "ftwin.local/archive/counter:1"
	archivePath := filepath.Join(t.TempDir(), "counter.tar")
	f, err := os.Create(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := ociimage.WriteArchive(ctx, f, ref, root,
		ociimage.WithEntrypoint("/app/bin/counter"), ociimage.WithCmd("-mem-mib", "4", "-interval", "50ms", "-listen", addr),
		ociimage.WithEnv("FTWIN_TEST=1"), ociimage.WithWorkingDir("/work")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := ociimage.ImportArchive(ctx, client, archivePath, "ftwin.local/archive/other:1"); err == nil ||
		!strings.Contains(err.Error(), "holds no image ftwin.local/archive/other:1 (it holds: "+ref+")") {
		t.Fatalf("import naming an image the archive lacks: %v", err)
	}
	img, err := ociimage.ImportArchive(ctx, client, archivePath, "")
	if err != nil {
		t.Fatal(err)
	}
	if img.Name() != ref {
		t.Fatalf("imported image %q, want %q", img.Name(), ref)
	}
	again, err := ociimage.ImportArchive(ctx, client, archivePath, ref)
	if err != nil || again.Target().Digest != img.Target().Digest {
		t.Fatalf("second import: %v, target %v; want the same manifest %s", err, again, img.Target().Digest)
	}
	spec, err := img.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Config.WorkingDir != "/work" || !slices.Contains(spec.Config.Env, "FTWIN_TEST=1") || len(spec.Config.Entrypoint) != 1 {
		t.Fatalf("image config %+v: want working dir /work, FTWIN_TEST=1 and the entrypoint", spec.Config)
	}

	logPath := filepath.Join(t.TempDir(), "counter.log")
	id := "counter-archive"
	container, err := client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(ociimage.DefaultSnapshotter),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithHostNamespace(specs.NetworkNamespace)))
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() { container.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup) })
	task, err := container.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	t.Cleanup(func() { task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill) })
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}
	s := waitState(t, logPath, func(s state.State) bool { return s.Tick >= 2 && s.MemOK })
	if s.MemMiB != 4 {
		t.Fatalf("state %+v: want mem_mib 4 (the archive's Cmd)", s)
	}
}

// waitState polls the workload log at path until its last state satisfies ok.
func waitState(t *testing.T, path string, ok func(state.State) bool) state.State {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := state.Last(path)
		if err == nil && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(path)
			t.Fatalf("no matching state within 30s; last %+v (%v); log:\n%s", s, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func layers(ctx context.Context, t *testing.T, img containerd.Image) []ocispec.Descriptor {
	t.Helper()
	m, err := images.Manifest(ctx, img.ContentStore(), img.Target(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m.Layers
}

// buildCounter builds the counter workload as a static binary.
func buildCounter(t *testing.T) string { return testbin.Build(t, counterPkg) }

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startContainerd starts a private containerd for the test and returns a
// client of it. The daemon runs in its own mount namespace with a tmpfs on
// /run/containerd, so its runc state cannot collide with another containerd's
// on the same machine; everything else lives under t.TempDir(). It is stopped
// when the test ends (after the test's own cleanups, which run first).
func startContainerd(t *testing.T) *containerd.Client {
	t.Helper()
	testutil.RequireRoot(t, "containerd")

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	sock := filepath.Join(dir, "containerd.sock")
	if err := os.WriteFile(cfg, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "containerd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
		`mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd && exec containerd "$@"`, "containerd",
		"--config", cfg, "--address", sock, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("containerd log (end):\n%s", logTail(logPath))
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("containerd exited during start-up: %v\n%s", err, logTail(logPath))
		default:
		}
		if _, err := os.Stat(sock); err == nil {
			client, err := containerd.New(sock, containerd.WithTimeout(5*time.Second))
			if err == nil {
				t.Cleanup(func() { client.Close() })
				return client
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd socket %s not ready within 20s\n%s", sock, logTail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logTail returns the last few KiB of the file at path.
func logTail(path string) []byte {
	b, _ := os.ReadFile(path)
	return b[max(0, len(b)-4096):]
}
