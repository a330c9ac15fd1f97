package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
)

func TestArchiveBase(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/kcat.tar":           "import.local/kcat",
		"My Image_1.0.oci.tar":    "import.local/my-image_1.0",
		"x/app.tar.gz":            "import.local/app",
		"/tmp/.tar":               "import.local/image",
		"/srv/images/STREAMS.tgz": "import.local/streams",
	} {
		if got := archiveBase(in); got != want {
			t.Errorf("archiveBase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPickImage(t *testing.T) {
	one := []images.Image{{Name: "docker.io/library/kcat:latest"}}
	two := append(one, images.Image{Name: "ftwin.local/streams:1"})
	for _, tc := range []struct {
		imgs    []images.Image
		ref     string
		want    string
		wantErr string
	}{
		{one, "", "docker.io/library/kcat:latest", ""},
		{one, "kcat", "docker.io/library/kcat:latest", ""},
		{one, "kcat:latest", "docker.io/library/kcat:latest", ""},
		{two, "ftwin.local/streams:1", "ftwin.local/streams:1", ""},
		{two, "", "", "holds 2 images (docker.io/library/kcat:latest, ftwin.local/streams:1): name the one to run"},
		{two, "kcat:2", "", "holds no image kcat:2 (it holds: docker.io/library/kcat:latest, ftwin.local/streams:1)"},
		{nil, "", "", "holds no image"},
	} {
		got, err := pickImage(tc.imgs, tc.ref)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("pickImage(%d images, %q) error %v, want %q", len(tc.imgs), tc.ref, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Name != tc.want {
			t.Errorf("pickImage(%d images, %q) = %q, %v; want %q", len(tc.imgs), tc.ref, got.Name, err, tc.want)
		}
	}
}

func TestWriteArchiveDeterministic(t *testing.T) {
	root := rootfs(t)
	write := func() []byte {
		var buf bytes.Buffer
		if err := WriteArchive(context.Background(), &buf, "ftwin.local/x:1", root, WithEntrypoint("/bin/x"), WithEnv("A=1")); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	first := write()
	if !bytes.Equal(first, write()) {
		t.Fatal("two archives of the same tree and options differ")
	}
	names := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(first))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[hdr.Name] = true
	}
	for _, want := range []string{"oci-layout", "index.json", "manifest.json", "blobs/sha256/"} {
		if !names[want] {
			t.Errorf("archive lacks %s (has %v)", want, names)
		}
	}
	if err := WriteArchive(context.Background(), io.Discard, "Not A Ref", root); err == nil {
		t.Error("an invalid image name: no error")
	}
	if err := WriteArchive(context.Background(), io.Discard, "x:1", filepath.Join(root, "missing")); err == nil || !strings.Contains(err.Error(), "root filesystem") {
		t.Errorf("a missing root filesystem: %v", err)
	}
}

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007fae42d38000)
	librdkafka.so.1 => /lib/x86_64-linux-gnu/librdkafka.so.1 (0x00007fae42b2d000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fae42939000)
	/lib64/ld-linux-x86-64.so.2 (0x00007fae42d3a000)
`
	libs, err := parseLdd(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/librdkafka.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if strings.Join(libs, " ") != strings.Join(want, " ") {
		t.Fatalf("libraries %q, want %q", libs, want)
	}
	if _, err := parseLdd(strings.NewReader("\tlibgone.so.3 => not found\n")); err == nil || !strings.Contains(err.Error(), "libgone.so.3") {
		t.Fatalf("a missing library: %v", err)
	}
}

func TestAddExecutable(t *testing.T) {
	if _, err := exec.LookPath("ldd"); err != nil {
		t.Skip("no ldd")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	root := t.TempDir()
	abs, err := AddExecutable(context.Background(), root, "sh")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := filepath.Abs(sh); abs != want {
		t.Fatalf("AddExecutable returned %s, want %s", abs, want)
	}
	fi, err := os.Stat(filepath.Join(root, abs))
	if err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("the executable in the root filesystem: %v, %v", fi, err)
	}
	libs, err := sharedLibraries(context.Background(), abs)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range libs {
		if _, err := os.Stat(filepath.Join(root, l)); err != nil {
			t.Errorf("library %s not copied: %v", l, err)
		}
	}
	if _, err := AddExecutable(context.Background(), root, filepath.Join(root, "missing")); err == nil {
		t.Error("a missing executable: no error")
	}
}
