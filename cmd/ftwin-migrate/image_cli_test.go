package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func runApp(t *testing.T, args ...string) error {
	t.Helper()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	return app.Run(append([]string{"ftwin-migrate"}, args...))
}

// TestLabRunBadInput: lab run refuses bad flags with a clear error before it needs a lab.
func TestLabRunBadInput(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "x.tar")
	if err := os.WriteFile(archive, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"lab", "run", "--name", "inone", "--base-dir", dir}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--image-archive", filepath.Join(dir, "missing.tar"), "cloud", "c1"}, "--image-archive: stat"},
		{[]string{"--image-archive", dir, "cloud", "c1"}, "not a file"},
		{[]string{"--image-archive", archive, "-v", "/tmp", "cloud", "c1"}, "want HOST-PATH:CONTAINER-PATH"},
		{[]string{"--image-archive", archive, "-v", filepath.Join(dir, "nope") + ":/d", "cloud", "c1"}, "host path"},
		{[]string{"--image-archive", archive, "-v", dir + ":/d:rx", "cloud", "c1"}, "want ro or rw"},
		{[]string{"--image-archive", archive, "-e", "NOVALUE", "cloud", "c1"}, `--env "NOVALUE": want KEY=VALUE`},
		{[]string{"--image-archive", archive, "-w", "rel", "cloud", "c1"}, "want an absolute path"},
		{[]string{"--entrypoint", "/bin/x", "--workload", archive, "cloud", "c1"}, "--entrypoint replaces an image's entrypoint"},
		{[]string{"--workload", archive, "--image", "x", "cloud", "c1"}, "give one of them"},
		{[]string{"cloud"}, "takes HOST and ID"},
		{[]string{"--image-archive", archive, "cloud", "c1"}, `lab "inone" is not up`},
	} {
		err := runApp(t, append(append([]string{}, base...), tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("lab run %v: %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestImageBuild: image build writes an archive whose config carries the entrypoint, Cmd,
// environment and working directory asked for.
func TestImageBuild(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "app.tar")
	if err := runApp(t, "image", "build", "--rootfs", root, "--name", "ftwin.local/app:1", "-o", out,
		"--entrypoint", "/app/run", "-e", "A=1", "-w", "/app", "--", "-x", "y"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var configs []ocispec.Image
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		var img ocispec.Image
		if data, _ := io.ReadAll(tr); strings.HasPrefix(hdr.Name, "blobs/") && json.Unmarshal(data, &img) == nil && img.RootFS.Type == "layers" {
			configs = append(configs, img)
		}
	}
	if len(configs) != 1 {
		t.Fatalf("%d image configs in the archive, want 1", len(configs))
	}
	c := configs[0].Config
	if strings.Join(c.Entrypoint, " ") != "/app/run" || strings.Join(c.Cmd, " ") != "-x y" || c.WorkingDir != "/app" || !strings.Contains(strings.Join(c.Env, " "), "A=1") {
		t.Fatalf("config %+v: want entrypoint /app/run, cmd -x y, working dir /app, A=1", c)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "x:1", "-o", out}, "--rootfs DIR or --executable PROGRAM"},
		{[]string{"--name", "x:1", "-o", out, "--rootfs", root, "--executable", "sh"}, "not both"},
		{[]string{"--name", "x:1", "-o", out, "--executable", "no-such-program-here"}, "executable file not found"},
		{[]string{"--name", "Bad Name", "-o", out, "--rootfs", root}, "image name"},
		{[]string{"--name", "x:1", "-o", out, "--rootfs", filepath.Join(root, "missing")}, "root filesystem"},
	} {
		if err := runApp(t, append([]string{"image", "build"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("image build %v: %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestLabRunImageCLI: the README's path for one's own image — image build, lab run with an
// image archive, environment, a bind mount and a working directory, migrate, lab logs on the
// target — with kcat, a dynamically linked librdkafka consumer.
func TestLabRunImageCLI(t *testing.T) {
	requireLabTools(t)
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat not installed (`make install` installs it): %v", err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	l := newLab(t)
	l.name = "i" + l.name[1:] // this test's labs: "i…" (the cleanup reads l.name when it runs)
	work := t.TempDir()
	kcatTar, toolsTar := filepath.Join(work, "kcat.tar"), filepath.Join(work, "tools.tar")
	if r := l.run("image", "build", "--executable", kcat, "--name", "ftwin.local/kcat:1", "-o", kcatTar); r.code != 0 {
		t.Fatal(r)
	}
	if r := l.run("image", "build", "--executable", sh, "--executable", "cat", "--executable", "sleep", "--name", "ftwin.local/tools:1", "-o", toolsTar); r.code != 0 {
		t.Fatal(r)
	}
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "greeting"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	const prefix = "10.240.59."
	l.mustLab("up", "--broker", "kfake", "--subnet", prefix+"0/24", "--allow-bind-mount", data)

	// Environment, mount and working directory reach the process.
	l.mustLab("run", "--image-archive", toolsTar, "-e", "GREETER=ftwin", "-v", data+":/data:ro", "-w", "/data", "cloud", "probe",
		"--", "-c", `echo "$GREETER $(pwd) $(cat greeting)"; exec sleep 1000`)
	waitFor(t, 20*time.Second, func() bool {
		return strings.Contains(l.mustLab("logs", "cloud", "probe").stdout, "ftwin /data hello")
	}, "the probe container's output")
	// With its bind mount it moves (the agents allow the path, given to lab up), and the
	// mount is there on the target.
	migrateTo := func(id string) {
		t.Helper()
		mr := l.run("--address", filepath.Join(l.dir(), "hosts", "cloud", "containerd.sock"), "--namespace", "ftwin", "migrate",
			"--pki", filepath.Join(l.dir(), "pki"), "--host", "cloud", "--to", prefix+"12:7443", id)
		if mr.code != 0 {
			t.Fatal(mr)
		}
	}
	migrateTo("probe")
	if out := l.mustLab("exec", "fog", "probe", "--", "cat", "/data/greeting").stdout; out != "hello" {
		t.Errorf("the bind-mounted file in the moved container on fog reads %q, want hello", out)
	}

	broker := prefix + "1:9092"
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic("readings"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, nil, "readings"); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Partition: 0, Value: fmt.Appendf(nil, "r-%d", i)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(0, 50)
	r := l.mustLab("run", "--image-archive", kcatTar, "cloud", "kc", "--", "-b", broker, "-E", "-C", "-t", "readings", "-p", "0", "-o", "beginning", "-u", "-f", `%o %s\n`)
	if !strings.Contains(r.stdout, "namespace ftwin") || !strings.Contains(r.stdout, "lab logs cloud kc") {
		t.Errorf("lab run does not say where the container is and where its output goes: %s", r)
	}
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(l.mustLab("logs", "cloud", "kc").stdout, "49 r-49") }, "kcat consumes on cloud")

	migrateTo("kc")
	produce(50, 100)
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(l.mustLab("logs", "fog", "kc").stdout, "99 r-99") }, "kcat consumes on fog after the move (lab logs fog kc)")
	if out := l.mustLab("logs", "fog", "kc").stdout; strings.Contains(out, "0 r-0\n") {
		t.Errorf("the restored kcat read the topic from its beginning again (restarted, not restored):\n%s", out)
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
