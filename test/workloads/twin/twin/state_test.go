package twin

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
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
	before := s.Digest()
	if r, _ := s.Apply("d-0", 21, 21, 40, 50); !r.Replay || s.Digest() != before {
		t.Fatalf("replay %+v changed the state", r)
	}
	if _, err := s.Apply("d-9", 1, 1, 1, 1); err == nil {
		t.Fatal("a device outside the fleet of 4 was accepted")
	}
	if _, err := NewState(1, 1<<20, 10); err == nil {
		t.Fatal("1 MiB for a million devices accepted")
	}
}

// The baseline is the mean over the whole ring, exact in hundredths as the ring turns over.
func TestStateBaseline(t *testing.T) {
	s, _ := NewState(1, 256, 10) // 1 MiB / 256 devices / 32 B = 128 readings a ring
	if s.RingLen() != 128 {
		t.Fatalf("ring of %d, want 128", s.RingLen())
	}
	for i := int64(1); i <= 128; i++ {
		s.Apply("d-3", i, i, 10, 50)
	}
	for i := int64(129); i <= 128+64; i++ { // half the ring now reads 20.01
		s.Apply("d-3", i, i, 20.01, 50)
	}
	r, _ := s.Apply("d-3", 1000, 1000, 20.01, 50)
	if want := (64*10 + 64*20.01) / 128; math.Abs(r.Baseline-want) > 1e-9 {
		t.Fatalf("baseline %v, want %v", r.Baseline, want)
	}
}

// A prefilled state is a history at the sensors' precision: every slot written, and it does not
// compress to nothing.
func TestPrefillIsRealState(t *testing.T) {
	s, _ := NewState(16, 256, 60)
	s.Prefill(7, time.Second, time.Unix(1e9, 0))
	for _, d := range s.devices {
		for k, r := range d.ring {
			if r.ts == 0 || r.temp == 0 || math.Round(r.temp*100) != r.temp*100 && math.Abs(math.Round(r.temp*100)-r.temp*100) > 1e-6 {
				t.Fatalf("%s slot %d: %+v is not a reading at 0.01", d.id, k, r)
			}
		}
	}
	var raw bytes.Buffer
	s.Everything(func(_, v []byte) { raw.Write(v) })
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	ratio := float64(raw.Len()) / float64(len(enc.EncodeAll(raw.Bytes(), nil)))
	t.Logf("16 MiB of prefilled state compresses %.2fx (zstd fastest)", ratio)
	if ratio > 10 {
		t.Fatalf("prefilled state compresses %.1fx: padding, not history", ratio)
	}
}

// A state rebuilt from the changelog (the bootstrap, then every batch's changes, one batch
// aborted and its changes written again) has the source's digest at the same boundary.
func TestChangelogRebuildDigest(t *testing.T) {
	src, _ := NewState(2, 8, 20)
	src.Prefill(7, time.Second, time.Unix(1e9, 0))
	type rec struct{ k, v []byte }
	var log []rec
	emit := func(k, v []byte) { log = append(log, rec{k, v}) }
	src.Everything(emit)
	seq := map[string]int64{}
	for batch := 0; batch < 50; batch++ {
		var pending []rec
		for i := 0; i < 37; i++ {
			dev := "d-" + string(rune('0'+(batch*7+i)%8))
			seq[dev]++
			if _, err := src.Apply(dev, seq[dev], int64(batch*100+i), 20+float64(i%13)/100, 50+float64(i%7)/100); err != nil {
				t.Fatal(err)
			}
		}
		src.Changes(func(k, v []byte) { pending = append(pending, rec{k, v}) })
		if batch == 20 { // aborted: its records vanish; the next batch writes them again
			src.Aborted()
			continue
		}
		log = append(log, pending...)
	}
	src.Changes(emit)
	dst, _ := NewState(2, 8, 20)
	for _, r := range log {
		if err := dst.ApplyChange(r.k, r.v); err != nil {
			t.Fatal(err)
		}
	}
	dst.Finish()
	if a, b := src.Digest(), dst.Digest(); a != b {
		t.Fatalf("rebuilt digest %s, source %s", b, a)
	}
	// And the digest sees a one-reading difference.
	src.Apply("d-1", seq["d-1"]+1, 1, 99, 1)
	if src.Digest() == dst.Digest() {
		t.Fatal("the digest did not change with the state")
	}
}
