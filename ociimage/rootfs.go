package ociimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// AddExecutable copies the executable at path into the root filesystem rootfs, at the same
// path, together with the shared libraries it loads — as ldd(1) lists them, the dynamic loader
// included — each at the path ldd names, so that the program runs in an image made of rootfs
// (BuildDir, WriteArchive). A static executable is copied alone. Libraries the program opens
// itself at run time (dlopen: plugins, NSS modules) are not found this way: copy them too.
// A path without a slash is looked up in PATH. AddExecutable returns the program's path in the
// image (for WithEntrypoint).
func AddExecutable(ctx context.Context, rootfs, path string) (string, error) {
	if !strings.Contains(path, "/") {
		found, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("add executable %s: %w", path, err)
		}
		path = found
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("add executable %s: %w", path, err)
	}
	libs, err := sharedLibraries(ctx, path)
	if err != nil {
		return "", fmt.Errorf("add executable %s: %w", path, err)
	}
	for _, p := range append([]string{path}, libs...) {
		if err := copyInto(rootfs, p); err != nil {
			return "", fmt.Errorf("add executable %s: %w", path, err)
		}
	}
	return path, nil
}

// sharedLibraries runs ldd on path and returns the absolute paths of the libraries it lists
// (none for a static executable).
func sharedLibraries(ctx context.Context, path string, searchDirs ...string) ([]string, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ldd", path)
	if len(searchDirs) > 0 {
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+strings.Join(searchDirs, ":"))
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if out := stdout.String() + stderr.String(); strings.Contains(out, "not a dynamic executable") || strings.Contains(out, "statically linked") {
		return nil, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return nil, fmt.Errorf("ldd: %w: %s", err, strings.TrimSpace(stderr.String()))
	} else if err != nil {
		return nil, fmt.Errorf("ldd (from the C library's tools; install libc-bin): %w", err)
	}
	return parseLdd(&stdout)
}

// parseLdd reads ldd's output: "libx.so.1 => /lib/libx.so.1 (0x...)", "/lib64/ld-linux.so.2
// (0x...)", "linux-vdso.so.1 (0x...)" (the kernel's: nothing to copy), "libx.so => not found".
func parseLdd(r io.Reader) ([]string, error) {
	var libs, missing []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, target, arrow := strings.Cut(line, "=>")
		if !arrow {
			target = name
		}
		target = strings.TrimSpace(target)
		if strings.HasPrefix(target, "not found") {
			missing = append(missing, strings.TrimSpace(name))
			continue
		}
		if i := strings.Index(target, " ("); i >= 0 {
			target = target[:i]
		}
		if filepath.IsAbs(target) {
			libs = append(libs, target)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("ldd finds no %s on this machine", strings.Join(missing, ", "))
	}
	return libs, nil
}

// copyInto copies the file at path (following symbolic links) to the same path under rootfs,
// creating the directories on the way, with the file's permission bits.
func copyInto(rootfs, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	dst := filepath.Join(rootfs, path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", path, err)
	}
	return out.Close()
}

// AddLibraries copies into rootfs the shared libraries the ELF file at path loads, as ldd(1)
// lists them (the dynamic loader included), each at the path ldd names — as AddExecutable does,
// but without path itself: for the programs and libraries of a tree put into rootfs by other
// means, such as a jlink'd JRE's bin/java and lib/*.so, which live in the image at another path
// than on the host. searchDirs are where the tree's own libraries are (the JRE's lib and
// lib/server): ldd looks there too (LD_LIBRARY_PATH), and what it finds there is not copied. A
// static file has none. It returns the paths of the libraries it copied.
func AddLibraries(ctx context.Context, rootfs, path string, searchDirs ...string) ([]string, error) {
	found, err := sharedLibraries(ctx, path, searchDirs...)
	if err != nil {
		return nil, fmt.Errorf("add the libraries of %s: %w", path, err)
	}
	var libs []string
	for _, p := range found {
		own := false
		for _, d := range searchDirs {
			if rel, err := filepath.Rel(d, p); err == nil && !strings.HasPrefix(rel, "..") {
				own = true
			}
		}
		if !own {
			libs = append(libs, p)
		}
	}
	for _, p := range libs {
		if err := copyInto(rootfs, p); err != nil {
			return nil, fmt.Errorf("add the libraries of %s: %w", path, err)
		}
	}
	return libs, nil
}
