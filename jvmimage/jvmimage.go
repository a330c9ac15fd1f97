// Package jvmimage builds the OCI image of a Java application without a registry: a root
// filesystem holding a minimal JRE made by jlink (the modules the application needs, no debug
// symbols, man pages or headers) at /opt/jre, the C libraries that JRE loads (as ldd lists them,
// ociimage.AddLibraries), the application's directory at /app and a /tmp, written as an image
// archive by ociimage.WriteArchive for `lab run --image-archive` (lab.Workload.ImageArchive).
//
// The JRE is cached: jlink runs once per JDK and module list, into CacheDir.
package jvmimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ftwin-migrate/ftwin-migrate/ociimage"
)

// DefaultModules are the JDK modules a Kafka Streams 4.x application needs (jdeps
// --print-module-deps of kafka-streams, kafka-clients and their dependencies; java.naming for
// SASL/JAAS configurations).
var DefaultModules = []string{"java.base", "java.desktop", "java.management", "java.naming", "java.security.jgss", "java.security.sasl", "java.sql", "jdk.unsupported"}

// DefaultJavaOpts are the JVM options of the image's entrypoint, chosen for a JVM that CRIU
// moves: no hsperfdata file (a file in /tmp mapped into memory, which the restored copy's
// fresh root filesystem would not hold), the serial collector (fewer threads, a smaller heap to
// dump), a small, bounded heap that the collector keeps close to what is live (fewer pages to dump).
var DefaultJavaOpts = []string{"-XX:-UsePerfData", "-XX:+UseSerialGC", "-Xms16m", "-Xmx256m", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=30", "-Xss512k", "-XX:TieredStopAtLevel=1"}

// JREPath is where the JRE lives in the image; AppPath where the application's directory goes.
const (
	JREPath = "/opt/jre"
	AppPath = "/app"
)

// Config describes an image.
type Config struct {
	// JDK is the JDK with jlink. Default: $JAVA_HOME if it has bin/jlink, else the first of
	// /usr/lib/jvm/*17* with bin/jlink.
	JDK string
	// Modules are the JDK modules of the JRE. Default DefaultModules.
	Modules []string
	// AppDir is the application's directory (its jar and its lib/ of dependencies), copied to
	// AppPath. Required.
	AppDir string
	// MainClass is the class to run, with the classpath AppPath/*:AppPath/lib/*. Required.
	MainClass string
	// JavaOpts are the JVM's options. Default DefaultJavaOpts.
	JavaOpts []string
	// Env is added to the image's environment (KEY=VALUE).
	Env []string
	// CacheDir keeps the JREs jlink made. Default: the user's cache directory/ftwin-migrate/jre.
	CacheDir string
}

func (c *Config) defaults() error {
	if c.AppDir == "" || c.MainClass == "" {
		return errors.New("jvmimage: the application's directory and main class are required")
	}
	if fi, err := os.Stat(c.AppDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("jvmimage: application directory %s: not a directory (%v)", c.AppDir, err)
	}
	if c.JDK == "" {
		jdk, err := FindJDK()
		if err != nil {
			return err
		}
		c.JDK = jdk
	}
	if len(c.Modules) == 0 {
		c.Modules = DefaultModules
	}
	if c.JavaOpts == nil {
		c.JavaOpts = DefaultJavaOpts
	}
	if c.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		c.CacheDir = filepath.Join(base, "ftwin-migrate", "jre")
	}
	return nil
}

// FindJDK returns a JDK with jlink: $JAVA_HOME, or one of /usr/lib/jvm/*17*.
func FindJDK() (string, error) {
	cands := []string{os.Getenv("JAVA_HOME")}
	more, _ := filepath.Glob("/usr/lib/jvm/*17*")
	cands = append(cands, more...)
	for _, c := range cands {
		if c == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(c, "bin", "jlink")); err == nil {
			return c, nil
		}
	}
	return "", errors.New("jvmimage: no JDK with jlink ($JAVA_HOME, /usr/lib/jvm/*17*): install openjdk-17-jdk-headless")
}

// Entrypoint is the image's entrypoint: the JRE's java with the options, the classpath and the
// main class; the application's arguments follow.
func (c Config) Entrypoint() []string {
	e := append([]string{JREPath + "/bin/java"}, c.JavaOpts...)
	return append(e, "-cp", AppPath+"/*:"+AppPath+"/lib/*", c.MainClass)
}

// JRE returns the directory of a JRE with c's modules made by jlink from c's JDK, making it
// (into the cache) if it is not there yet.
func JRE(ctx context.Context, c Config) (string, error) {
	if err := c.defaults(); err != nil {
		return "", err
	}
	release, _ := os.ReadFile(filepath.Join(c.JDK, "release"))
	sum := sha256.Sum256([]byte(c.JDK + "\n" + string(release) + "\n" + strings.Join(c.Modules, ",")))
	dir := filepath.Join(c.CacheDir, hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "release")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(c.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("jvmimage: %w", err)
	}
	tmp, err := os.MkdirTemp(c.CacheDir, "jlink-")
	if err != nil {
		return "", fmt.Errorf("jvmimage: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "jre")
	cmd := exec.CommandContext(ctx, filepath.Join(c.JDK, "bin", "jlink"), "--add-modules", strings.Join(c.Modules, ","),
		"--strip-debug", "--no-man-pages", "--no-header-files", "--output", out)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("jvmimage: jlink --add-modules %s: %w: %s", strings.Join(c.Modules, ","), err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Rename(out, dir); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, serr := os.Stat(filepath.Join(dir, "release")); serr != nil { // not another run's
			return "", fmt.Errorf("jvmimage: %w", err)
		}
	}
	return dir, nil
}

// Rootfs lays out the image's root filesystem in dir (created; it must not exist or be empty):
// the JRE at JREPath, the C libraries its programs and libraries load, the application at
// AppPath, and /tmp.
func Rootfs(ctx context.Context, c Config, dir string) error {
	if err := c.defaults(); err != nil {
		return err
	}
	jre, err := JRE(ctx, c)
	if err != nil {
		return err
	}
	if err := copyTree(jre, filepath.Join(dir, JREPath)); err != nil {
		return fmt.Errorf("jvmimage: copy the JRE: %w", err)
	}
	if err := copyTree(c.AppDir, filepath.Join(dir, AppPath)); err != nil {
		return fmt.Errorf("jvmimage: copy the application: %w", err)
	}
	// The C libraries: those of bin/java and of every library of the JRE (libjvm.so, libnio.so,
	// libzip.so ... which java opens at run time, so ldd of java alone does not name them).
	elves := []string{filepath.Join(jre, "bin", "java")}
	libs, _ := filepath.Glob(filepath.Join(jre, "lib", "*.so"))
	server, _ := filepath.Glob(filepath.Join(jre, "lib", "server", "*.so"))
	for _, f := range append(append(elves, libs...), server...) {
		if _, err := ociimage.AddLibraries(ctx, dir, f, filepath.Join(jre, "lib"), filepath.Join(jre, "lib", "server")); err != nil {
			return fmt.Errorf("jvmimage: %w", err)
		}
	}
	for _, d := range []string{"tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("jvmimage: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return fmt.Errorf("jvmimage: %w", err)
	}
	return nil
}

// WriteArchive lays out the root filesystem (Rootfs, in a temporary directory) and writes the
// image archive of ref to path, with the entrypoint Config.Entrypoint.
func WriteArchive(ctx context.Context, c Config, ref, path string) error {
	if err := c.defaults(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".rootfs-")
	if err != nil {
		return fmt.Errorf("jvmimage: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := Rootfs(ctx, c, tmp); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".archive-")
	if err != nil {
		return fmt.Errorf("jvmimage: %w", err)
	}
	defer os.Remove(f.Name())
	opts := []ociimage.Opt{ociimage.WithEntrypoint(c.Entrypoint()...), ociimage.WithWorkingDir("/")}
	if len(c.Env) > 0 {
		opts = append(opts, ociimage.WithEnv(c.Env...))
	}
	if err := ociimage.WriteArchive(ctx, f, ref, tmp, opts...); err != nil {
		f.Close()
		return fmt.Errorf("jvmimage: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("jvmimage: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("jvmimage: %w", err)
	}
	return nil
}

// copyTree copies the regular files, directories and symbolic links under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm()|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		case info.Mode().IsRegular():
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		}
		return fmt.Errorf("%s: not a file, directory or symbolic link", p)
	})
}
