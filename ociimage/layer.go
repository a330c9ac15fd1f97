package ociimage

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// DirLayerTar writes an uncompressed tar layer holding the tree under root: directories,
// regular files, symbolic links, hard links (as links to the first name walked), device nodes
// and FIFOs, with their modes and owners (uid and gid, no names). Sockets are left out (they
// cannot be archived). The output is deterministic: entries in lexical order with mtime 0, so
// the same tree always gives the same bytes and the same digest.
func DirLayerTar(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Uname, hdr.Gname = "", ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := seen[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[key] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write tar entry %s: %w", hdr.Name, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if n, err := io.Copy(tw, f); err != nil {
			return fmt.Errorf("write tar entry %s: %w", hdr.Name, err)
		} else if n != hdr.Size {
			return fmt.Errorf("write tar entry %s: %d bytes read, %d expected (did the file change?)", hdr.Name, n, hdr.Size)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("layer of %s: %w", root, err)
	}
	return tw.Close()
}
