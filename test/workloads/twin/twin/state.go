package twin

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/ftwin-migrate/ftwin-migrate/sensors"
)

// sample is one reading in a device's history ring; 32 bytes.
type sample struct {
	seq  int64
	ts   int64
	temp float64
	hum  float64
}

const sampleSize = int(unsafe.Sizeof(sample{}))

// ChunkSamples is how many consecutive ring slots one changelog record carries (4 KiB): the
// store's unit of change, as a key of a Kafka Streams store would be.
const ChunkSamples = 128

// State is the twin's working state: for every device of the fleet a history ring of its last
// readings, all of the same length, filling an arena of the configured size. The outputs are
// computed from it: the rolling statistics over the last Window readings, and the device's
// baseline, the mean temperature over its whole ring (kept as exact sums in hundredths, the
// sensors' precision, updated as each reading evicts the oldest). Nothing in it is padding:
// Prefill writes a history from the generator's distributions into every slot, and the load
// keeps overwriting the oldest readings.
type State struct {
	arena   []sample
	ringLen int
	window  int
	devices []*device // in fleet order: device i is sensors.DeviceID(i)
	byID    map[string]*device

	emitted []chunkRef // changelog records written by the last batch (re-marked if it aborts)

	// The digest's cache (see Digest), apart from the changelog's dirty marks: a SHA-256 per
	// chunk of the arena and one per group of digestGroup chunks, with the chunks written
	// since they were hashed. Nil until the first Digest or WarmDigest, so that a twin that
	// never digests neither holds nor maintains it.
	sums       [][sha256.Size]byte
	groupSums  [][sha256.Size]byte
	sumDirty   []bool  // chunks written since hashed
	sumList    []int32 // their indices
	groupDirty []bool  // groups with a chunk re-hashed, during an update
	groupList  []int32
	hashed     int // chunks [0, hashed) have been hashed; the others are yet to be (after Prefill)
}

// digestGroup is how many chunk hashes the digest hashes into one group hash (2 KiB of
// hashes): a change of a chunk costs re-hashing its chunk and its group, and the digest then
// hashes only the group hashes, 1/64 of the chunk hashes (64 KiB per 512 MiB of state).
const digestGroup = 64

type device struct {
	id      string
	ring    []sample
	chunk0  int32 // index in the arena of the ring's first chunk
	n       int64 // readings written to the ring, prefill included; the next slot is n % len
	lastSeq int64 // highest live sequence number applied (prefilled history is at seq <= 0)
	sumT    int64 // sum of the ring's temperatures, in hundredths
	sumH    int64 // sum of the ring's humidities, in hundredths

	dirty     []bool  // chunks changed since the last changelog write
	dirtyList []int32 // their indices
	metaDirty bool
}

type chunkRef struct {
	dev   int
	chunk int32 // -1: the device's meta record
}

// NewState allocates stateMiB of history for a fleet of devices; the statistics cover the
// last window readings of a device. The memory is written only by Prefill or a rebuild.
func NewState(stateMiB, devices, window int) (*State, error) {
	if stateMiB < 1 || devices < 1 || window < 2 {
		return nil, fmt.Errorf("twin: state of %d MiB for %d devices, window %d: need at least 1, 1, 2", stateMiB, devices, window)
	}
	ring := stateMiB << 20 / sampleSize / devices
	ring -= ring % ChunkSamples
	if ring < window || ring < ChunkSamples {
		return nil, fmt.Errorf("twin: %d MiB hold %d readings per device for %d devices, fewer than the window %d or a chunk %d: lower -devices", stateMiB, ring, devices, window, ChunkSamples)
	}
	s := &State{arena: make([]sample, ring*devices), ringLen: ring, window: window, byID: map[string]*device{}}
	chunks := ring / ChunkSamples
	for i := range devices {
		d := &device{id: sensors.DeviceID(i), ring: s.arena[i*ring : (i+1)*ring], chunk0: int32(i * chunks), dirty: make([]bool, chunks)}
		s.devices = append(s.devices, d)
		s.byID[d.id] = d
	}
	return s, nil
}

// Devices is the fleet's size.
func (s *State) Devices() int { return len(s.devices) }

// Bytes is the size of the history arena.
func (s *State) Bytes() int { return len(s.arena) * sampleSize }

// RingLen is how many readings each device's ring holds.
func (s *State) RingLen() int { return s.ringLen }

// Prefill writes a full history into every device's ring: readings drawn from the sensors'
// distributions (sensors.Device, seeded apart from the live load) at their precision, about one
// per period (a sampling clock's jitter of up to 1%), ending at now. Their sequence numbers are
// <= 0, so live readings (seq >= 1) follow.
func (s *State) Prefill(seed uint64, period time.Duration, now time.Time) {
	for i, d := range s.devices {
		g := sensors.NewDevice(i, seed)
		jitter := rand.New(rand.NewPCG(seed, uint64(i)+1<<32))
		start := now.Add(-time.Duration(s.ringLen) * period).UnixNano()
		for k := range d.ring {
			ev := g.Next(start + int64(k)*int64(period) + jitter.Int64N(int64(period)/100+1))
			d.ring[k] = sample{seq: int64(k - s.ringLen + 1), ts: ev.TsNS, temp: ev.Temp, hum: ev.Humidity}
		}
		d.n, d.lastSeq = int64(s.ringLen), 0
		d.recompute()
	}
	if s.sums != nil { // every chunk is to be hashed again
		s.hashed = 0
		clear(s.sumDirty)
		s.sumList = s.sumList[:0]
	}
}

func hundredths(x float64) int64 { return int64(math.Round(x * 100)) }

func (d *device) recompute() {
	d.sumT, d.sumH = 0, 0
	for _, r := range d.ring {
		d.sumT += hundredths(r.temp)
		d.sumH += hundredths(r.hum)
	}
}

// stats are the mean and standard deviation of temperature over the last window readings.
func (s *State) stats(d *device) (mean, stddev float64, n int) {
	n = int(min(d.n, int64(s.window)))
	if n == 0 {
		return 0, 0, 0
	}
	var sum, sq float64
	for k := int64(1); k <= int64(n); k++ {
		t := d.ring[(d.n-k)%int64(len(d.ring))].temp
		sum += t
		sq += t * t
	}
	mean = sum / float64(n)
	return mean, math.Sqrt(max(0, sq/float64(n)-mean*mean)), n
}

// Result is what applying a reading gives: the statistics the output carries.
type Result struct {
	Mean, Stddev float64
	// Baseline is the mean temperature over the device's whole history ring.
	Baseline float64
	Anomaly  bool
	// Replay says the reading was applied before (its transaction was aborted and the record
	// delivered again): the state was left as it is.
	Replay bool
}

// minAnomalyWindow is how many readings a device needs before one is called an anomaly.
const minAnomalyWindow = 8

// Apply adds a reading of device id and returns the statistics over the window before it, the
// baseline, and whether the reading lies more than 3 standard deviations from the window's mean.
func (s *State) Apply(id string, seq, ts int64, temp, hum float64) (Result, error) {
	d := s.byID[id]
	if d == nil {
		return Result{}, fmt.Errorf("twin: device %q is not in the fleet of %d (raise -devices)", id, len(s.devices))
	}
	mean, sd, n := s.stats(d)
	r := Result{Mean: mean, Stddev: sd, Baseline: float64(d.sumT) / float64(len(d.ring)) / 100,
		Anomaly: n >= minAnomalyWindow && sd > 0 && math.Abs(temp-mean) > 3*sd}
	if seq <= d.lastSeq {
		r.Replay = true
		return r, nil
	}
	slot := int(d.n % int64(len(d.ring)))
	old := d.ring[slot]
	if d.n >= int64(len(d.ring)) {
		d.sumT -= hundredths(old.temp)
		d.sumH -= hundredths(old.hum)
	}
	d.ring[slot] = sample{seq: seq, ts: ts, temp: temp, hum: hum}
	d.sumT += hundredths(temp)
	d.sumH += hundredths(hum)
	d.n++
	d.lastSeq = seq
	d.markDirty(int32(slot / ChunkSamples))
	s.markSum(d.chunk0 + int32(slot/ChunkSamples))
	return r, nil
}

func (d *device) markDirty(chunk int32) {
	if !d.dirty[chunk] {
		d.dirty[chunk] = true
		d.dirtyList = append(d.dirtyList, chunk)
	}
	d.metaDirty = true
}

// Changelog keys: "DEVICE/CHUNK" (a chunk of ChunkSamples ring slots, raw samples in this
// machine's byte order) and "DEVICE/meta" (n and lastSeq, 16 bytes little-endian).
func chunkKey(dev string, chunk int32) []byte {
	return []byte(dev + "/" + strconv.Itoa(int(chunk)))
}

func metaKey(dev string) []byte { return []byte(dev + "/meta") }

func (s *State) chunkBytes(d *device, chunk int32) []byte {
	part := d.ring[int(chunk)*ChunkSamples : int(chunk+1)*ChunkSamples]
	b := make([]byte, ChunkSamples*sampleSize)
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(&part[0])), len(b)))
	return b
}

func metaBytes(d *device) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, uint64(d.n))
	binary.LittleEndian.PutUint64(b[8:], uint64(d.lastSeq))
	return b
}

// Changes emits the changelog records of everything changed since the last call (the batch's
// changes; a store's changelog with caching sends the latest value of a key once per commit).
func (s *State) Changes(emit func(key, value []byte)) {
	s.emitted = s.emitted[:0]
	for i, d := range s.devices {
		for _, c := range d.dirtyList {
			d.dirty[c] = false
			emit(chunkKey(d.id, c), s.chunkBytes(d, c))
			s.emitted = append(s.emitted, chunkRef{i, c})
		}
		d.dirtyList = d.dirtyList[:0]
		if d.metaDirty {
			d.metaDirty = false
			emit(metaKey(d.id), metaBytes(d))
			s.emitted = append(s.emitted, chunkRef{i, -1})
		}
	}
}

// Everything emits the whole state as changelog records (the bootstrap of an empty changelog).
func (s *State) Everything(emit func(key, value []byte)) {
	for _, d := range s.devices {
		for c := range int32(len(d.dirty)) {
			emit(chunkKey(d.id, c), s.chunkBytes(d, c))
		}
		emit(metaKey(d.id), metaBytes(d))
	}
}

// Aborted marks the records of the last batch to be written again: its transaction, and the
// changelog records in it, were aborted, while the state keeps its changes (the replayed
// readings are recognised as such).
func (s *State) Aborted() {
	for _, r := range s.emitted {
		d := s.devices[r.dev]
		if r.chunk < 0 {
			d.metaDirty = true
		} else {
			d.markDirty(r.chunk)
		}
	}
	s.emitted = s.emitted[:0]
}

// ApplyChange applies one changelog record (a rebuild or a standby's replication). Finish must
// follow the last one before the state is used.
func (s *State) ApplyChange(key, value []byte) error {
	k := string(key)
	i := strings.LastIndexByte(k, '/')
	if i < 0 {
		return fmt.Errorf("twin: changelog key %q: want DEVICE/CHUNK or DEVICE/meta", k)
	}
	d := s.byID[k[:i]]
	if d == nil {
		return fmt.Errorf("twin: changelog key %q: device not in the fleet of %d (same -devices as the source?)", k, len(s.devices))
	}
	if k[i+1:] == "meta" {
		if len(value) != 16 {
			return fmt.Errorf("twin: changelog %q: %d bytes, want 16", k, len(value))
		}
		d.n, d.lastSeq = int64(binary.LittleEndian.Uint64(value)), int64(binary.LittleEndian.Uint64(value[8:]))
		return nil
	}
	c, err := strconv.Atoi(k[i+1:])
	if err != nil || c < 0 || c >= len(d.dirty) {
		return fmt.Errorf("twin: changelog key %q: no such chunk in a ring of %d chunks (same -state-mib and -devices as the source?)", k, len(d.dirty))
	}
	if len(value) != ChunkSamples*sampleSize {
		return fmt.Errorf("twin: changelog %q: %d bytes, want %d", k, len(value), ChunkSamples*sampleSize)
	}
	part := d.ring[c*ChunkSamples : (c+1)*ChunkSamples]
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&part[0])), len(value)), value)
	s.markSum(d.chunk0 + int32(c))
	return nil
}

// Finish derives what is not in the changelog (the sums) after ApplyChange.
func (s *State) Finish() {
	for _, d := range s.devices {
		d.recompute()
	}
}

// markSum marks chunk g of the arena (a write to it) to be hashed again by the digest.
func (s *State) markSum(g int32) {
	if int(g) >= s.hashed || s.sumDirty[g] { // not hashed yet, or marked already
		return
	}
	s.sumDirty[g] = true
	s.sumList = append(s.sumList, g)
}

// Digest is a SHA-256 of the whole state: every ring slot, and per device its counters and
// sums. Two twins at the same committed boundary have the same digest; it depends only on the
// state, not on how it came to be (prefill and readings, or a rebuild from the changelog).
//
// It is a hash tree, kept up to date incrementally: a SHA-256 per chunk of ChunkSamples
// slots (4 KiB), one per group of digestGroup chunk hashes, and the digest over a header, the
// devices' counters and the group hashes. A call hashes only what WarmDigest or
// WarmDigestSome have not: the chunks never hashed (all of them the first time, and after a
// Prefill), those written since they were hashed (by Apply or ApplyChange), and their groups:
// about 50 µs at 512 MiB with nothing changed, plus about 3.5 µs per changed chunk
// (BenchmarkDigest, with SHA-NI).
// The state must not change during a call (the loop owns it).
func (s *State) Digest() string {
	s.WarmDigest()
	return s.digestOf(s.groupSums)
}

// WarmDigest hashes everything Digest would (the first time, the whole state: about 0.3 s
// per 512 MiB), so that the next Digest costs only what changes after it.
func (s *State) WarmDigest() { s.warm(len(s.arena)/ChunkSamples, 0) }

// WarmDigestSome does a bounded share of the digest's work, for the loop to call between
// batches: it hashes up to n chunks not hashed yet (after a prefill or a rebuild) and, once
// more than n chunks were written since they were hashed, those (each once, however often it
// was written). Once every chunk has been hashed, a Digest after it hashes at most n chunks
// plus those written since (n = 256: about 1 ms).
func (s *State) WarmDigestSome(n int) { s.warm(n, n) }

// warm hashes up to cold chunks not hashed yet, and the chunks written since hashed if more
// than pending are.
func (s *State) warm(cold, pending int) {
	chunks := len(s.arena) / ChunkSamples
	if s.sums == nil {
		groups := (chunks + digestGroup - 1) / digestGroup
		s.sums = make([][sha256.Size]byte, chunks)
		s.groupSums = make([][sha256.Size]byte, groups)
		s.sumDirty = make([]bool, chunks)
		s.groupDirty = make([]bool, groups)
	}
	if len(s.sumList) > pending {
		for _, g := range s.sumList {
			s.sumDirty[g] = false
			s.sums[g] = s.chunkSum(int(g))
			s.markGroup(g / digestGroup)
		}
		s.sumList = s.sumList[:0]
	}
	if end := min(chunks, s.hashed+cold); end > s.hashed {
		for g := s.hashed; g < end; g++ {
			s.sums[g] = s.chunkSum(g)
		}
		for k := s.hashed / digestGroup; k <= (end-1)/digestGroup; k++ {
			s.markGroup(int32(k))
		}
		s.hashed = end
	}
	for _, k := range s.groupList {
		s.groupDirty[k] = false
		s.groupSums[k] = groupSum(s.sums, int(k))
	}
	s.groupList = s.groupList[:0]
}

func (s *State) markGroup(k int32) {
	if !s.groupDirty[k] {
		s.groupDirty[k] = true
		s.groupList = append(s.groupList, k)
	}
}

// chunkSum hashes chunk g of the arena: its samples' bytes in this machine's byte order, as the
// changelog carries them.
func (s *State) chunkSum(g int) [sha256.Size]byte {
	part := s.arena[g*ChunkSamples : (g+1)*ChunkSamples]
	return sha256.Sum256(unsafe.Slice((*byte)(unsafe.Pointer(&part[0])), ChunkSamples*sampleSize))
}

// groupSum hashes group k of the chunk hashes (the last group may be shorter).
func groupSum(sums [][sha256.Size]byte, k int) [sha256.Size]byte {
	part := sums[k*digestGroup : min((k+1)*digestGroup, len(sums))]
	return sha256.Sum256(unsafe.Slice((*byte)(unsafe.Pointer(&part[0])), len(part)*sha256.Size))
}

// digestOf is the digest given the group hashes: a header (the state's shape), per device its
// counters, sums and id, then the group hashes in arena order.
func (s *State) digestOf(groupSums [][sha256.Size]byte) string {
	h := sha256.New()
	b := make([]byte, 0, 64+len(s.devices)*48)
	b = append(b, "ftwin twin state v2\x00"...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s.arena)))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.ringLen))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s.devices)))
	for _, d := range s.devices {
		b = binary.LittleEndian.AppendUint64(b, uint64(d.n))
		b = binary.LittleEndian.AppendUint64(b, uint64(d.lastSeq))
		b = binary.LittleEndian.AppendUint64(b, uint64(d.sumT))
		b = binary.LittleEndian.AppendUint64(b, uint64(d.sumH))
		b = binary.LittleEndian.AppendUint64(b, uint64(len(d.id)))
		b = append(b, d.id...)
	}
	h.Write(b)
	if len(groupSums) > 0 {
		h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&groupSums[0])), len(groupSums)*sha256.Size))
	}
	return hex.EncodeToString(h.Sum(nil))
}
