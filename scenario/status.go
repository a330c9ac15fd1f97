package scenario

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// TwinStatus is what the scenario reads of the twin's status lines (the twin's Stats; the
// scenario does not import the workload).
type TwinStatus struct {
	Processed       int64  `json:"processed"`
	State           string `json:"state"`
	RebuiltRecords  int64  `json:"rebuilt_records"`
	RebuiltBytes    int64  `json:"rebuilt_bytes"`
	RebuildMs       int64  `json:"rebuild_ms"`
	Standby         bool   `json:"standby"`
	ReplicatedBytes int64  `json:"replicated_bytes"`
	Lag             int64  `json:"standby_lag"`
	TakeoverMs      int64  `json:"takeover_ms"`
	TakeoverBytes   int64  `json:"takeover_bytes"`
	Digest          string `json:"state_digest"`
	// The Kafka Streams twin's: its tasks, the records its stores restored from the changelog
	// (active restoration: a restart's rebuild, a standby's tail at its takeover) and how long
	// that took, and the JVM's resident set, threads and heap.
	ActiveTasks     int   `json:"active_tasks"`
	StandbyTasks    int   `json:"standby_tasks"`
	RestoredRecords int64 `json:"restored_records"`
	RestoreMs       int64 `json:"restore_ms"`
	RSSKiB          int64 `json:"rss_kib"`
	Threads         int   `json:"threads"`
	HeapUsedMiB     int64 `json:"heap_used_mib"`
}

// Statuses reads the status lines of a twin's log (one JSON object a line, among log lines).
func Statuses(path string) ([]TwinStatus, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: twin log: %w", err)
	}
	defer f.Close()
	var out []TwinStatus
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var st TwinStatus
		if json.Unmarshal([]byte(line), &st) == nil {
			out = append(out, st)
		}
	}
	return out, sc.Err()
}

// LastStatus is the last status line of a twin's log.
func LastStatus(path string) (TwinStatus, error) {
	all, err := Statuses(path)
	if err != nil || len(all) == 0 {
		return TwinStatus{}, err
	}
	return all[len(all)-1], nil
}

// firstDigest is the status line where a digest first appears (after a rebuild or takeover).
func firstDigest(path string) TwinStatus {
	all, _ := Statuses(path)
	for _, st := range all {
		if st.Digest != "" {
			return st
		}
	}
	return TwinStatus{}
}
