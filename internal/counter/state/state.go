// Package state is the counter workload's output format: one JSON object per
// line on stdout, one line per tick. Tests use it to read a workload's log and
// tell a restored process (tick keeps increasing, StartNS and the checksum
// lineage unchanged) from a restarted one (tick starts again at 1 with a new
// StartNS).
package state

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// State is one line of the workload's output.
type State struct {
	Tick     uint64 `json:"tick"`     // 1 on the first line, +1 per interval
	MemMiB   int    `json:"mem_mib"`  // size of the checked buffer
	Checksum string `json:"checksum"` // memstate checksum after this tick, 16 hex digits
	MemOK    bool   `json:"mem_ok"`   // result of the latest full verification
	PID      int    `json:"pid"`      // as seen by the process (1 in its own PID namespace)
	StartNS  int64  `json:"start_ns"` // Unix time in ns when the process started
	NowNS    int64  `json:"now_ns"`   // Unix time in ns when the line was written
	// MonoNS is CLOCK_MONOTONIC in ns when the line was written, as the process sees it (in a
	// time namespace: the namespace's clock, which CRIU carries across a restore).
	MonoNS int64 `json:"mono_ns,omitempty"`
	// Reconnects counts redials of the -connect peer; PeerLocal is the current connection's
	// local address (empty without -connect or while disconnected).
	Reconnects uint64 `json:"reconnects,omitempty"`
	PeerLocal  string `json:"peer_local,omitempty"`
}

// ErrNoState is returned by Last when the log holds no complete state line.
var ErrNoState = errors.New("no complete state line")

// ParseLines decodes the state lines of a workload log. Lines that are not
// JSON objects (other output mixed into the log, such as stderr) are skipped,
// and so is a last line without a newline, which the workload may still be
// writing. A newline-terminated JSON object that does not decode is an error.
func ParseLines(r io.Reader) ([]State, error) {
	var states []State
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return states, nil // a partial last line, or none
		}
		if err != nil {
			return states, fmt.Errorf("read line %d: %w", n, err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var s State
		if err := json.Unmarshal(line, &s); err != nil {
			return states, fmt.Errorf("line %d: %w", n, err)
		}
		states = append(states, s)
	}
}

// Last returns the last complete state line of the log file at path, or an
// error wrapping ErrNoState if there is none yet.
func Last(path string) (State, error) {
	f, err := os.Open(path)
	if err != nil {
		return State{}, err
	}
	defer f.Close()
	states, err := ParseLines(f)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(states) == 0 {
		return State{}, fmt.Errorf("%s: %w", path, ErrNoState)
	}
	return states[len(states)-1], nil
}
