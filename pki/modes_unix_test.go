//go:build unix

package pki

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFileModes runs with umask 0: the modes must come from Init, not from the umask.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := lab(t)
	want := map[string]fs.FileMode{
		"ca.key": 0o600, "fog.key": 0o600, "cloud.key": 0o600,
		"ca.crt": 0o644, "fog.crt": 0o644, "cloud.crt": 0o644,
	}
	for name, mode := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != mode {
			t.Errorf("%s: mode %v, want %v", name, got, mode)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("%s: mode %v, want 0700", dir, got)
	}
}
