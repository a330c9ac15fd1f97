package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
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
