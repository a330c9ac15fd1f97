package memstate

import "testing"

func stepped(mib int, seed, ticks uint64) *Buffer {
	b := New(mib, seed)
	for t := uint64(1); t <= ticks; t++ {
		b.Step(t)
	}
	return b
}

func TestDeterministic(t *testing.T) {
	a, b := stepped(1, 42, 100), stepped(1, 42, 100)
	if a.Checksum() != b.Checksum() {
		t.Fatalf("same seed and ticks gave checksums %s and %s", a.Checksum(), b.Checksum())
	}
	if c := stepped(1, 43, 100); c.Checksum() == a.Checksum() {
		t.Fatalf("seeds 42 and 43 gave the same checksum %s", a.Checksum())
	}
	if c := stepped(2, 42, 100); c.Checksum() == a.Checksum() {
		t.Fatalf("1 MiB and 2 MiB gave the same checksum %s", a.Checksum())
	}
}

func TestStepChangesChecksumAndStaysVerified(t *testing.T) {
	b := New(1, 7)
	if !b.Verify() {
		t.Fatal("fresh buffer does not verify")
	}
	seen := map[string]bool{b.Checksum(): true}
	for tick := uint64(1); tick <= 1000; tick++ {
		b.Step(tick)
		if seen[b.Checksum()] {
			t.Fatalf("tick %d repeated checksum %s", tick, b.Checksum())
		}
		seen[b.Checksum()] = true
		if tick%100 == 0 && !b.Verify() {
			t.Fatalf("buffer does not verify after tick %d", tick)
		}
	}
}

func TestStepMatchesFullRecompute(t *testing.T) {
	b := stepped(1, 3, 500)
	if got, want := b.sum, b.fullSum(); got != want {
		t.Fatalf("incremental checksum %016x, full recompute %016x", got, want)
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(w []uint64)
	}{
		{"bit flip", func(w []uint64) { w[12345] ^= 1 << 17 }},
		{"last word", func(w []uint64) { w[len(w)-1]++ }},
		{"swap", func(w []uint64) { w[1], w[2] = w[2], w[1] }},
		{"zeroed page", func(w []uint64) { clear(w[4096/8 : 2*4096/8]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := stepped(1, 9, 10)
			tc.corrupt(b.words)
			if b.Verify() {
				t.Fatal("corruption not detected")
			}
			// Later steps must not hide it.
			for tick := uint64(11); tick <= 1000; tick++ {
				b.Step(tick)
			}
			if b.Verify() {
				t.Fatal("corruption hidden by later steps")
			}
		})
	}
}

func TestNewPanicsOnZeroSize(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New(0, 1) did not panic")
		}
	}()
	New(0, 1)
}

func BenchmarkVerify64MiB(b *testing.B) {
	buf := New(64, 1)
	b.SetBytes(64 * MiB)
	for b.Loop() {
		if !buf.Verify() {
			b.Fatal("verify failed")
		}
	}
}
