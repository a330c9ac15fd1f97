package ctrd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestContainerInitsInTimeNamespace: runc records a container's start time as /proc shows it
// in the daemon's time namespace (shifted by its boottime offset); ContainerInits must still
// recognise the process, and must not take a process whose start time differs for it.
func TestContainerInitsInTimeNamespace(t *testing.T) {
	pid := os.Getpid()
	seen, err := processStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	clock := ClockOffsets{Monotonic: 25 * time.Hour, Boottime: 49 * time.Hour}
	for _, c := range []struct {
		name     string
		clock    ClockOffsets
		recorded uint64
		want     bool
	}{
		{"machine's clock", ClockOffsets{}, seen, true},
		{"daemon in a time namespace", clock, seen + 49*3600*clockTicks, true},
		{"unshifted start in a time namespace (another process)", clock, seen, false},
		{"another start time", ClockOffsets{}, seen + 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			b, _ := json.Marshal(c.clock)
			if err := os.WriteFile(clockFile(dir), b, 0o644); err != nil {
				t.Fatal(err)
			}
			state := filepath.Join(dir, "run", "runc", "ftwin", "c1", "state.json")
			if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
				t.Fatal(err)
			}
			b, _ = json.Marshal(map[string]any{"init_process_pid": pid, "init_process_start": c.recorded})
			if err := os.WriteFile(state, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(ContainerInits(dir), pid); got != c.want {
				t.Fatalf("ContainerInits found pid %d: %v, want %v (recorded start %d, seen here %d, clock %+v)", pid, got, c.want, c.recorded, seen, c.clock)
			}
		})
	}
}

func TestClockOffsetsValidate(t *testing.T) {
	for _, o := range []ClockOffsets{{Monotonic: -time.Second}, {Boottime: 1500 * time.Millisecond}} {
		if err := o.validate(); err == nil {
			t.Errorf("%+v accepted: want whole, non-negative seconds", o)
		}
	}
	if err := (ClockOffsets{Monotonic: time.Hour, Boottime: 2 * time.Hour}).validate(); err != nil {
		t.Error(err)
	}
}
