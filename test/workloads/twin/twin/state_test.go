package twin

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"github.com/klauspost/compress/zstd"

	"github.com/ftwin-migrate/ftwin-migrate/sensors"
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

// digestScratch is the digest computed from nothing: every chunk hashed, every group, without
// the cache. The incremental Digest must always equal it.
func (s *State) digestScratch() string {
	sums := make([][sha256.Size]byte, len(s.arena)/ChunkSamples)
	for g := range sums {
		sums[g] = s.chunkSum(g)
	}
	groups := make([][sha256.Size]byte, (len(sums)+digestGroup-1)/digestGroup)
	for k := range groups {
		groups[k] = groupSum(sums, k)
	}
	return s.digestOf(groups)
}

// The incremental digest equals the digest from scratch after any mix of readings (new and
// replayed), changelog records (chunks and meta), rebuild finishes, changelog writes and
// aborts, prefills and partial warming (WarmDigestSome, with the state partly hashed); and it
// changes whenever the state does.
func TestDigestIncremental(t *testing.T) {
	const devices = 3
	s, _ := NewState(1, devices, 20) // 85 chunks a ring: 255 in all, the last group short
	if chunks := len(s.arena) / ChunkSamples; chunks%digestGroup == 0 {
		t.Fatalf("%d chunks: want a short last group", chunks)
	}
	if got, want := s.Digest(), s.digestScratch(); got != want {
		t.Fatalf("empty state: digest %s, from scratch %s", got, want)
	}
	s.Prefill(7, time.Second, time.Unix(1e9, 0))
	rng := rand.New(rand.NewPCG(1, 2))
	seq := make([]int64, devices)
	last := s.Digest()
	changed, unknown := false, false // since the last digest: the state changed; may have
	checks := 0
	for step := range 20000 {
		dev := rng.IntN(devices)
		id := sensors.DeviceID(dev)
		switch r := rng.IntN(100); {
		case r < 70: // a reading; one in ten applied before
			sq := seq[dev] + 1
			if rng.IntN(10) == 0 && seq[dev] > 0 {
				sq = seq[dev] - rng.Int64N(min(seq[dev], 5))
			}
			res, err := s.Apply(id, sq, rng.Int64(), 15+float64(rng.IntN(2000))/100, 40+float64(rng.IntN(3000))/100)
			if err != nil {
				t.Fatal(err)
			}
			if res.Replay != (sq <= seq[dev]) {
				t.Fatalf("step %d: reading %d after %d: replay %v", step, sq, seq[dev], res.Replay)
			}
			if !res.Replay {
				seq[dev] = sq
				changed = true
			}
		case r < 86: // a changelog chunk record (a replica's update)
			v := make([]byte, ChunkSamples*sampleSize)
			for i := range v {
				v[i] = byte(rng.Uint32())
			}
			if err := s.ApplyChange(chunkKey(id, int32(rng.IntN(s.ringLen/ChunkSamples))), v); err != nil {
				t.Fatal(err)
			}
			changed = true
		case r < 89: // a changelog meta record
			n, ls := rng.Int64N(int64(10*s.ringLen)), rng.Int64N(1000)
			v := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, uint64(n)), uint64(ls))
			if err := s.ApplyChange(metaKey(id), v); err != nil {
				t.Fatal(err)
			}
			seq[dev] = ls
			changed = true
		case r < 91: // the end of a rebuild: the sums again
			s.Finish()
			unknown = true
		case r < 94: // a batch's changelog records, written or aborted: the state stays
			s.Changes(func(_, _ []byte) {})
			if rng.IntN(2) == 0 {
				s.Aborted()
			}
		case r < 99: // the loop's share of the digest's work, between batches
			n, hashed := rng.IntN(40), s.hashed
			s.WarmDigestSome(n)
			if want := min(len(s.arena)/ChunkSamples, hashed+n); s.hashed != want || len(s.sumList) > n {
				t.Fatalf("step %d: WarmDigestSome(%d): hashed %d chunks (want %d), %d written since", step, n, s.hashed, want, len(s.sumList))
			}
		default:
			s.Prefill(rng.Uint64(), time.Second, time.Unix(1e9+rng.Int64N(1e6), 0))
			clear(seq)
			changed = true
		}
		if rng.IntN(25) != 0 {
			continue
		}
		checks++
		got := s.Digest()
		if want := s.digestScratch(); got != want {
			t.Fatalf("step %d: incremental digest %s, from scratch %s", step, got, want)
		}
		if changed && got == last {
			t.Fatalf("step %d: the state changed, the digest did not", step)
		}
		if !changed && !unknown && got != last {
			t.Fatalf("step %d: the state did not change, the digest did", step)
		}
		last, changed, unknown = got, false, false
	}
	t.Logf("%d digests checked", checks)
}

// Equal states have equal digests however they came to be: prefilled and applied to (with
// digests taken along the way or not), copied record by record in any order into a state that
// was digested while empty, or rebuilt from a copy and then replicated.
func TestDigestHistoryIndependent(t *testing.T) {
	const devices = 8
	type reading struct {
		dev       string
		seq, ts   int64
		temp, hum float64
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var readings []reading
	seq := map[string]int64{}
	for i := range 5000 {
		dev := sensors.DeviceID(rng.IntN(devices))
		seq[dev]++
		readings = append(readings, reading{dev, seq[dev], int64(i), 15 + float64(rng.IntN(2000))/100, 40 + float64(rng.IntN(3000))/100})
	}
	run := func(digestEvery int) *State {
		s, _ := NewState(2, devices, 20)
		s.Prefill(7, time.Second, time.Unix(1e9, 0))
		if digestEvery > 0 {
			s.WarmDigest()
		}
		for i, r := range readings {
			if _, err := s.Apply(r.dev, r.seq, r.ts, r.temp, r.hum); err != nil {
				t.Fatal(err)
			}
			if digestEvery > 0 && i%digestEvery == 0 {
				s.Digest()
			}
		}
		return s
	}
	a, b := run(0), run(37)
	want := a.Digest()
	if got := b.Digest(); got != want {
		t.Fatalf("the same readings with digests along the way: %s, without: %s", got, want)
	}

	// A copy of a's records, shuffled, into a state digested while empty.
	type rec struct{ k, v []byte }
	var recs []rec
	a.Everything(func(k, v []byte) { recs = append(recs, rec{k, v}) })
	rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	c, _ := NewState(2, devices, 20)
	c.Digest()
	for i, r := range recs {
		if err := c.ApplyChange(r.k, r.v); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			c.WarmDigest()
		}
	}
	c.Finish()
	if got := c.Digest(); got != want {
		t.Fatalf("copied record by record: %s, the source: %s", got, want)
	}

	// And c, now a replica, follows a's changes to a new state, which it reaches as a does.
	for i, r := range readings[:1000] {
		if _, err := a.Apply(r.dev, seq[r.dev]+int64(i)+1, r.ts, r.temp+1, r.hum); err != nil {
			t.Fatal(err)
		}
		if i%250 == 249 {
			a.Changes(func(k, v []byte) {
				if err := c.ApplyChange(k, v); err != nil {
					t.Fatal(err)
				}
			})
			c.WarmDigest()
		}
	}
	c.Finish()
	if got, want := c.Digest(), a.Digest(); got != want || got != a.digestScratch() {
		t.Fatalf("the replica's digest %s, the source's %s (from scratch %s)", got, want, a.digestScratch())
	}
	if a.Digest() == b.Digest() {
		t.Fatal("the digest did not change with 1000 readings")
	}
}

// The twin's state is a pure function of its input readings, unless Config.Nondeterministic
// puts the processing time into it.
func TestNondeterministic(t *testing.T) {
	var events []sensors.Event
	gens := []*sensors.Device{sensors.NewDevice(0, 1), sensors.NewDevice(1, 1), sensors.NewDevice(2, 1), sensors.NewDevice(3, 1)}
	for i := range 2000 {
		events = append(events, gens[i%len(gens)].Next(int64(1e18)+int64(i)*1e6))
	}
	digest := func(nondeterministic bool) string {
		st, _ := NewState(1, len(gens), 20)
		st.Prefill(7, time.Second, time.Unix(1e9, 0))
		tw := &Twin{cfg: Config{Nondeterministic: nondeterministic}, state: st}
		for _, ev := range events {
			if _, err := tw.apply(ev); err != nil {
				t.Fatal(err)
			}
		}
		return st.Digest()
	}
	det := digest(false)
	if again := digest(false); again != det {
		t.Fatalf("the same input gave digests %s and %s", det, again)
	}
	a, b := digest(true), digest(true)
	if a == b || a == det {
		t.Fatalf("nondeterministic: digests %s and %s (deterministic %s): want all different", a, b, det)
	}
}

// BenchmarkDigest: the digest at a cutover, with no chunk or some changed since the last one
// (changed=N: N chunks spread over the arena written, then Digest); warm: the whole state
// hashed (the first digest, or WarmDigest after a prefill); warm-step: the twin's share per
// batch after a rebuild (WarmDigestSome); whole-sha256: a SHA-256 over the arena, what the
// digest used to cost.
func BenchmarkDigest(b *testing.B) {
	for _, mib := range []int{256, 512} {
		s, err := NewState(mib, 256, 60)
		if err != nil {
			b.Fatal(err)
		}
		s.Prefill(7, time.Second, time.Unix(1e9, 0))
		s.WarmDigest()
		chunks := len(s.arena) / ChunkSamples
		for _, n := range []int{0, 100, 1000} {
			b.Run(fmt.Sprintf("%dMiB/changed=%d", mib, n), func(b *testing.B) {
				iter := 0
				for b.Loop() {
					b.StopTimer()
					for i := range n {
						g := (i*chunks/n + iter) % chunks
						s.arena[g*ChunkSamples].ts++
						s.markSum(int32(g))
					}
					iter++
					b.StartTimer()
					s.Digest()
				}
			})
		}
		b.Run(fmt.Sprintf("%dMiB/warm", mib), func(b *testing.B) {
			for b.Loop() {
				s.hashed = 0
				s.WarmDigest()
			}
			b.SetBytes(int64(s.Bytes()))
		})
		b.Run(fmt.Sprintf("%dMiB/warm-step=%d", mib, digestStep), func(b *testing.B) {
			for b.Loop() {
				if s.hashed == chunks {
					s.hashed = 0
				}
				s.WarmDigestSome(digestStep)
			}
		})
		s.WarmDigest()
		b.Run(fmt.Sprintf("%dMiB/whole-sha256", mib), func(b *testing.B) {
			for b.Loop() {
				sha256.Sum256(unsafe.Slice((*byte)(unsafe.Pointer(&s.arena[0])), s.Bytes()))
			}
			b.SetBytes(int64(s.Bytes()))
		})
	}
}
