package ociimage

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// epoch is the modification time of every layer entry, so that the layer
// depends on the binary's bytes only.
var epoch = time.Unix(0, 0)

// rootDirs are the layer's directories besides /bin: mount points runc would
// otherwise have to create, /etc for files the runtime may bind-mount, and a
// world-writable /tmp.
var rootDirs = []struct {
	name string
	mode int64
}{
	{"bin/", 0o755},
	{"dev/", 0o755},
	{"etc/", 0o755},
	{"proc/", 0o755},
	{"sys/", 0o755},
	{"tmp/", 0o1777},
}

// LayerTar writes an uncompressed tar layer holding the file at binaryPath as
// /bin/name (mode 0755) and a few root directories. The output is
// deterministic: entries in a fixed order, owned by uid and gid 0, with mtime
// 0, so the same binary always gives the same bytes and the same digest.
func LayerTar(w io.Writer, binaryPath, name string) error {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("invalid binary name %q: must be a single path element", name)
	}
	f, err := os.Open(binaryPath)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", binaryPath)
	}

	tw := tar.NewWriter(w)
	for _, d := range rootDirs {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write tar entry %s: %w", d.name, err)
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "bin/" + name, Mode: 0o755, Size: fi.Size(), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write tar entry %s: %w", hdr.Name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("write tar entry %s: %w", hdr.Name, err)
	}
	return tw.Close()
}
