package jvmimage

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEntrypoint(t *testing.T) {
	c := Config{MainClass: "a.B", JavaOpts: []string{"-Xmx1m"}}
	want := []string{"/opt/jre/bin/java", "-Xmx1m", "-cp", "/app/*:/app/lib/*", "a.B"}
	if got := c.Entrypoint(); !slices.Equal(got, want) {
		t.Fatalf("entrypoint %q, want %q", got, want)
	}
}

func TestConfigNeedsAnApplication(t *testing.T) {
	if err := (&Config{MainClass: "a.B"}).defaults(); err == nil {
		t.Fatal("no application directory accepted")
	}
	if err := (&Config{AppDir: t.TempDir() + "/none", MainClass: "a.B"}).defaults(); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a missing application directory: %v", err)
	}
}

// TestRootfsRunsJava lays out a root filesystem with a jlink'd JRE (java.base only) and runs its
// java under chroot-like conditions: the loader and libraries ldd names are there.
func TestRootfsRunsJava(t *testing.T) {
	if testing.Short() {
		t.Skip("jlink takes seconds")
	}
	jdk, err := FindJDK()
	if err != nil {
		t.Skip(err)
	}
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "x.jar"), []byte("not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rootfs")
	c := Config{JDK: jdk, Modules: []string{"java.base"}, AppDir: app, MainClass: "a.B", CacheDir: t.TempDir()}
	if err := Rootfs(context.Background(), c, dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"opt/jre/bin/java", "opt/jre/lib/server/libjvm.so", "opt/jre/lib/modules", "app/x.jar", "tmp"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("rootfs lacks %s: %v", f, err)
		}
	}
	libc, _ := filepath.Glob(filepath.Join(dir, "*", "*", "libc.so.6"))
	more, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*", "libc.so.6"))
	if len(libc)+len(more) == 0 {
		t.Error("rootfs lacks the C library")
	}
	if os.Geteuid() == 0 {
		cmd := exec.Command("chroot", dir, "/opt/jre/bin/java", "-XX:-UsePerfData", "-version")
		// The loader expands java's RPATH $ORIGIN through /proc/self/exe, which a bare chroot
		// lacks (a container has its /proc): name the JRE's libraries instead.
		cmd.Env = []string{"LD_LIBRARY_PATH=/opt/jre/lib:/opt/jre/lib/server"}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "version") {
			t.Fatalf("java in the rootfs: %v\n%s", err, out)
		}
	}
}
