package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGroupCPU reads a group's CPU time from cgroup v1's cpuacct.usage and v2's cpu.stat.
func TestGroupCPU(t *testing.T) {
	v1, v2 := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(v1, "cpuacct.usage"), []byte("1500000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v2, "cpu.stat"), []byte("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := groupCPU(v1); got != 1500*time.Millisecond {
		t.Errorf("v1 group CPU %v, want 1.5s", got)
	}
	if got := groupCPU(v2); got != 2500*time.Millisecond {
		t.Errorf("v2 group CPU %v, want 2.5s", got)
	}
	if got := groupCPU(t.TempDir()); got != 0 {
		t.Errorf("a group without accounting files: %v, want 0", got)
	}
	mem := filepath.Join(v2, "memory.stat")
	if err := os.WriteFile(mem, []byte("anon_thp 0\nanon 4096\nfile 8192\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := statValue(mem, "anon"); got != 4096 {
		t.Errorf("memory.stat anon = %d, want 4096 (not anon_thp's)", got)
	}
}
