package agent

import (
	"path/filepath"
	"strconv"

	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
)

// HookSocketPath is where a host process reaches socket (a path inside the container) of the
// container whose init process is pid: through the process's root, /proc/PID/root.
func HookSocketPath(pid uint32, socket string) string {
	return filepath.Join("/proc", strconv.FormatUint(uint64(pid), 10), "root", socket)
}

// HookResumed is the agent's answer to a relayed resume: where the restored application
// resumed fetching.
type HookResumed struct {
	Offsets kafkahooks.Offsets `json:"offsets"`
}
