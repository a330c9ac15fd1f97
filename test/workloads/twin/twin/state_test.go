package twin

import (
	"math"
	"testing"
)

func TestStateStats(t *testing.T) {
	s, err := NewState(1, 4, 10)
	if err != nil {
		t.Fatal(err)
	}
	if s.Bytes() != 1<<20 {
		t.Errorf("arena %d bytes, want 1 MiB", s.Bytes())
	}
	for i := int64(1); i <= 20; i++ {
		temp := 20.0
		if i%2 == 0 {
			temp = 22
		}
		r, err := s.Apply("d-0", i, i, temp, 50)
		if err != nil {
			t.Fatal(err)
		}
		if r.Anomaly {
			t.Fatalf("reading %d flagged", i)
		}
	}
	r, _ := s.Apply("d-0", 21, 21, 40, 50)
	if math.Abs(r.Mean-21) > 1e-9 || math.Abs(r.Stddev-1) > 1e-9 || !r.Anomaly {
		t.Fatalf("after alternating 20/22: %+v, want mean 21, stddev 1, anomaly for 40", r)
	}
	// A replayed reading (aborted transaction, delivered again) does not change the state.
	before := s.devices["d-0"].n
	if r, _ := s.Apply("d-0", 21, 21, 40, 50); !r.Replay || s.devices["d-0"].n != before {
		t.Fatalf("replay %+v changed the ring", r)
	}
}

func TestStateCapacity(t *testing.T) {
	s, err := NewState(1, 2, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a", "b"} {
		if _, err := s.Apply(d, 1, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Apply("c", 1, 1, 1, 1); err == nil {
		t.Fatal("a third device fit in a state for two")
	}
	if _, err := NewState(1, 1<<20, 10); err == nil {
		t.Fatal("1 MiB for a million devices with a window of 10 accepted")
	}
}

func TestSnapshotRestore(t *testing.T) {
	a, _ := NewState(1, 4, 5)
	for i := int64(1); i <= 8; i++ {
		a.Apply("d-1", i, i*10, float64(i), 40)
	}
	snaps := a.dirtySnapshots()
	if len(snaps) != 1 || len(snaps[0].Window) != 5 || snaps[0].Window[0] != 4 || snaps[0].Seq != 8 {
		t.Fatalf("snapshots %+v", snaps)
	}
	if len(a.dirtySnapshots()) != 0 {
		t.Fatal("dirty after a snapshot")
	}
	b, _ := NewState(1, 4, 5)
	if err := b.restore(snaps[0]); err != nil {
		t.Fatal(err)
	}
	ra, _ := a.Apply("d-1", 9, 90, 9, 40)
	rb, _ := b.Apply("d-1", 9, 90, 9, 40)
	if ra != rb {
		t.Fatalf("restored state answers %+v, original %+v", rb, ra)
	}
	if r, _ := b.Apply("d-1", 8, 80, 8, 40); !r.Replay {
		t.Fatal("restored state forgot the last seq")
	}
}
