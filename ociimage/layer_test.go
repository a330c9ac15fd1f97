package ociimage

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeFile(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(path, []byte(data), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

func layer(t *testing.T, binaryPath, name string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := LayerTar(&buf, binaryPath, name); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLayerTarDeterministic(t *testing.T) {
	bin := writeFile(t, "binary content")
	first := layer(t, bin, "prog")

	// A different mtime and mode on the source must not matter.
	if err := os.Chtimes(bin, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o500); err != nil {
		t.Fatal(err)
	}
	if second := layer(t, bin, "prog"); !bytes.Equal(first, second) {
		t.Fatal("two layers of the same binary differ")
	}

	if other := layer(t, writeFile(t, "other content"), "prog"); bytes.Equal(first, other) {
		t.Fatal("layers of different binaries are equal")
	}
	if renamed := layer(t, bin, "other"); bytes.Equal(first, renamed) {
		t.Fatal("layers with different binary names are equal")
	}
}

func TestLayerTarContent(t *testing.T) {
	type entry struct {
		name string
		mode int64
		data string
	}
	want := []entry{
		{"bin/", 0o755, ""},
		{"dev/", 0o755, ""},
		{"etc/", 0o755, ""},
		{"proc/", 0o755, ""},
		{"sys/", 0o755, ""},
		{"tmp/", 0o1777, ""},
		{"bin/prog", 0o755, "binary content"},
	}

	tr := tar.NewReader(bytes.NewReader(layer(t, writeFile(t, "binary content"), "prog")))
	var got []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: uid %d gid %d mtime %v, want 0 0 epoch", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, entry{hdr.Name, hdr.Mode, string(data)})
	}
	if len(got) != len(want) {
		t.Fatalf("got entries %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestLayerTarErrors(t *testing.T) {
	bin := writeFile(t, "x")
	for _, name := range []string{"", ".", "..", "a/b"} {
		if err := LayerTar(io.Discard, bin, name); err == nil {
			t.Errorf("name %q: no error", name)
		}
	}
	if err := LayerTar(io.Discard, filepath.Join(t.TempDir(), "missing"), "prog"); err == nil {
		t.Error("missing binary: no error")
	}
	if err := LayerTar(io.Discard, t.TempDir(), "prog"); err == nil {
		t.Error("directory as binary: no error")
	}
}

// rootfs makes a small tree: a directory, a file, a symlink, a hard link and a socket.
func rootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/lib", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/libx.so.1"), []byte("library"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libx.so.1", filepath.Join(root, "usr/lib/libx.so")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "usr/lib/libx.so.1"), filepath.Join(root, "etc/hard")); err != nil {
		t.Fatal(err)
	}
	return root
}

func dirLayer(t *testing.T, root string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := DirLayerTar(&buf, root); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDirLayerTar(t *testing.T) {
	root := rootfs(t)
	first := dirLayer(t, root)
	if err := os.Chtimes(filepath.Join(root, "usr/lib/libx.so.1"), time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if again := dirLayer(t, root); !bytes.Equal(first, again) {
		t.Fatal("two layers of the same tree differ (mtime leaked into the layer)")
	}

	type entry struct {
		name     string
		typ      byte
		mode     int64
		linkname string
		data     string
	}
	want := []entry{
		{"etc/", tar.TypeDir, 0o755, "", ""},
		{"etc/hard", tar.TypeReg, 0o644, "", "library"},
		{"usr/", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/libx.so", tar.TypeSymlink, 0o777, "libx.so.1", ""},
		{"usr/lib/libx.so.1", tar.TypeLink, 0o644, "etc/hard", ""},
	}
	tr := tar.NewReader(bytes.NewReader(first))
	var got []entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !hdr.ModTime.Equal(time.Unix(0, 0)) || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: mtime %v, uname %q, gname %q: want epoch and no names", hdr.Name, hdr.ModTime, hdr.Uname, hdr.Gname)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, entry{hdr.Name, hdr.Typeflag, hdr.Mode & 0o7777, hdr.Linkname, string(data)})
	}
	if len(got) != len(want) {
		t.Fatalf("got entries %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}

	if err := DirLayerTar(io.Discard, filepath.Join(root, "missing")); err == nil {
		t.Error("missing root: no error")
	}
}

func TestImageEnv(t *testing.T) {
	o := newOptions([]Opt{WithEnv("A=1", "PATH=/opt/bin", "B=2"), WithEnv("A=3")})
	got := o.imageEnv()
	want := []string{"PATH=/opt/bin", "A=3", "B=2"}
	if len(got) != len(want) {
		t.Fatalf("env %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("env %q, want %q", got, want)
		}
	}
}
