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
}

type device struct {
	id      string
	ring    []sample
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
		d := &device{id: sensors.DeviceID(i), ring: s.arena[i*ring : (i+1)*ring], dirty: make([]bool, chunks)}
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
	return nil
}

// Finish derives what is not in the changelog (the sums) after ApplyChange.
func (s *State) Finish() {
	for _, d := range s.devices {
		d.recompute()
	}
}

// Digest is a SHA-256 of the whole state: every ring slot, and per device its counters and
// sums. Two twins at the same committed boundary have the same digest.
func (s *State) Digest() string {
	h := sha256.New()
	var b [40]byte
	for _, d := range s.devices {
		binary.LittleEndian.PutUint64(b[0:], uint64(d.n))
		binary.LittleEndian.PutUint64(b[8:], uint64(d.lastSeq))
		binary.LittleEndian.PutUint64(b[16:], uint64(d.sumT))
		binary.LittleEndian.PutUint64(b[24:], uint64(d.sumH))
		binary.LittleEndian.PutUint64(b[32:], uint64(len(d.id)))
		h.Write(b[:])
		h.Write([]byte(d.id))
	}
	if len(s.arena) > 0 {
		h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&s.arena[0])), len(s.arena)*sampleSize))
	}
	return hex.EncodeToString(h.Sum(nil))
}
