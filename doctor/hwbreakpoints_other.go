//go:build linux && !amd64

package doctor

import (
	"errors"
	"fmt"
	"runtime"
)

// HWBreakpointsWork reports whether hardware breakpoints fire on this host. The probe is
// written for linux/amd64 only.
func HWBreakpointsWork() (bool, error) {
	return false, fmt.Errorf("doctor: hardware breakpoint probe on %s: %w", runtime.GOARCH, errors.ErrUnsupported)
}
