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
