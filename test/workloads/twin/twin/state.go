package twin

import (
	"fmt"
	"math"
)

// sample is one reading in a device's history ring; 32 bytes.
type sample struct {
	seq  int64
	ts   int64
	temp float64
	hum  float64
}

const sampleSize = 32

// empty marks a history slot never written. It is not zero, so filling the arena with it
// touches (and so commits) every page.
const empty = math.MinInt64

// State is the twin's memory: per device, the latest reading and a history ring buffer from
// which the rolling statistics over the last Window readings come. All rings live in one arena
// of the configured size, allocated and touched at start, so the process really holds it.
type State struct {
	arena   []sample
	slotLen int // samples per device ring
	window  int
	devices map[string]*device
}

type device struct {
	id      string
	ring    []sample
	n       int64 // readings written to the ring
	lastSeq int64
	temp    float64
	hum     float64
	ts      int64
	dirty   bool // changed since the last changelog write
}

// NewState allocates stateMiB of history for up to maxDevices devices; the statistics cover
// the last window readings of a device.
func NewState(stateMiB, maxDevices, window int) (*State, error) {
	if stateMiB < 1 || maxDevices < 1 || window < 2 {
		return nil, fmt.Errorf("twin: state of %d MiB for %d devices, window %d: need at least 1, 1, 2", stateMiB, maxDevices, window)
	}
	total := stateMiB << 20 / sampleSize
	slot := total / maxDevices
	if slot < window {
		return nil, fmt.Errorf("twin: %d MiB hold %d readings per device for %d devices, fewer than the window %d", stateMiB, slot, maxDevices, window)
	}
	s := &State{arena: make([]sample, slot*maxDevices), slotLen: slot, window: window, devices: map[string]*device{}}
	for i := range s.arena {
		s.arena[i].seq = empty
	}
	return s, nil
}

// Devices is the number of devices known.
func (s *State) Devices() int { return len(s.devices) }

// Bytes is the size of the history arena.
func (s *State) Bytes() int { return len(s.arena) * sampleSize }

func (s *State) device(id string) (*device, error) {
	d := s.devices[id]
	if d != nil {
		return d, nil
	}
	i := len(s.devices)
	if (i+1)*s.slotLen > len(s.arena) {
		return nil, fmt.Errorf("twin: device %q is one too many: the state holds %d devices (raise -max-devices)", id, i)
	}
	d = &device{id: id, ring: s.arena[i*s.slotLen : (i+1)*s.slotLen]}
	s.devices[id] = d
	return d, nil
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
	Anomaly      bool
	// Replay says the reading was applied before (its transaction was aborted and the record
	// delivered again): the state was left as it is.
	Replay bool
}

// minAnomalyWindow is how many readings a device needs before one is called an anomaly.
const minAnomalyWindow = 8

// Apply adds a reading of device id and returns the statistics over the window before it, and
// whether it lies more than 3 standard deviations from their mean.
func (s *State) Apply(id string, seq, ts int64, temp, hum float64) (Result, error) {
	d, err := s.device(id)
	if err != nil {
		return Result{}, err
	}
	mean, sd, n := s.stats(d)
	r := Result{Mean: mean, Stddev: sd, Anomaly: n >= minAnomalyWindow && sd > 0 && math.Abs(temp-mean) > 3*sd}
	if seq <= d.lastSeq {
		r.Replay = true
		return r, nil
	}
	d.ring[d.n%int64(len(d.ring))] = sample{seq: seq, ts: ts, temp: temp, hum: hum}
	d.n++
	d.lastSeq, d.temp, d.hum, d.ts, d.dirty = seq, temp, hum, ts, true
	return r, nil
}

// Snapshot is a device's entry in the changelog: what the outputs depend on (the latest
// reading, the last sequence number, and the readings of the window). The older history is
// not in it.
type Snapshot struct {
	Device   string    `json:"device"`
	Seq      int64     `json:"seq"`
	TsNS     int64     `json:"ts_ns"`
	Temp     float64   `json:"temp"`
	Humidity float64   `json:"humidity"`
	Window   []float64 `json:"window"` // temperatures, oldest first
}

// dirtySnapshots returns the snapshots of the devices changed since the last call.
func (s *State) dirtySnapshots() []Snapshot {
	var out []Snapshot
	for _, d := range s.devices {
		if !d.dirty {
			continue
		}
		d.dirty = false
		n := int(min(d.n, int64(s.window)))
		w := make([]float64, 0, n)
		for k := int64(n); k >= 1; k-- {
			w = append(w, d.ring[(d.n-k)%int64(len(d.ring))].temp)
		}
		out = append(out, Snapshot{Device: d.id, Seq: d.lastSeq, TsNS: d.ts, Temp: d.temp, Humidity: d.hum, Window: w})
	}
	return out
}

// markAllDirty makes the next dirtySnapshots return every device: after an aborted
// transaction, whose changelog records were discarded.
func (s *State) markAllDirty() {
	for _, d := range s.devices {
		d.dirty = true
	}
}

// restore loads a device from its changelog snapshot.
func (s *State) restore(sn Snapshot) error {
	d, err := s.device(sn.Device)
	if err != nil {
		return err
	}
	d.n = 0
	for _, t := range sn.Window {
		d.ring[d.n%int64(len(d.ring))] = sample{temp: t}
		d.n++
	}
	d.lastSeq, d.temp, d.hum, d.ts = sn.Seq, sn.Temp, sn.Humidity, sn.TsNS
	return nil
}
