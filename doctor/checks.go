package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
)

const (
	// commandTimeout bounds each command the doctor runs.
	commandTimeout = 30 * time.Second
	// containerdTimeout bounds connecting to containerd and asking its version.
	containerdTimeout = 5 * time.Second

	diskWarnBelow = 2 << 30   // bytes free in the checkpoint directory
	diskFailBelow = 256 << 20 // bytes free in the checkpoint directory
)

func containerdBinaryCheck(ctx context.Context) Check {
	row := Check{Name: "containerd"}
	path, err := exec.LookPath("containerd")
	if err != nil {
		row.Status, row.Detail, row.Fix = Fail, "containerd not found in PATH", fixInstall
		return row
	}
	out, err := command(ctx, path, "--version")
	if err == nil {
		out, err = parseContainerdVersion(out)
	}
	if err != nil {
		row.Status, row.Detail, row.Fix = Warn, err.Error(), "check the containerd at "+path+" by hand"
		return row
	}
	row.Status, row.Detail = OK, out+" at "+path
	if v, err := parseVersion(out); err == nil && v.less(version{2, 0, 0}) {
		row.Status = Warn
		row.Detail += ": the 1.x line is out of support (1.7 ended in September 2026); ftwin-migrate is tested on containerd 2.3"
		row.Fix = fixInstall
	}
	return row
}

// containerdDaemonCheck asks the daemon at addr for its version. A daemon missing from an
// address the caller asked for is a FAIL; missing from the default address, a WARN.
func containerdDaemonCheck(ctx context.Context, addr string, requested bool) Check {
	row := Check{Name: "containerd daemon"}
	v, err := containerdVersion(ctx, addr)
	switch {
	case err == nil:
		row.Status, row.Detail = OK, fmt.Sprintf("%s: containerd %s (revision %s)", addr, strings.TrimPrefix(v.Version, "v"), v.Revision)
	case requested:
		row.Status, row.Detail = Fail, fmt.Sprintf("no daemon at %s (%v)", addr, err)
		row.Fix = "start containerd there (`containerd --address " + addr + "`) or give the address of the one that runs"
	default:
		row.Status, row.Detail = Warn, fmt.Sprintf("no daemon at %s (%v); the lab starts its own", addr, err)
		row.Fix = "nothing for the lab; on a real host start containerd (`systemctl start containerd`) or name its socket"
	}
	return row
}

func containerdVersion(ctx context.Context, addr string) (containerd.Version, error) {
	// Without a socket the client would retry until its timeout.
	if _, err := os.Stat(addr); errors.Is(err, fs.ErrNotExist) {
		return containerd.Version{}, errors.New("no socket")
	}
	client, err := containerd.New(addr, containerd.WithTimeout(containerdTimeout))
	if err != nil {
		return containerd.Version{}, err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, containerdTimeout)
	defer cancel()
	v, err := client.Version(ctx)
	if err != nil {
		return containerd.Version{}, fmt.Errorf("version: %w", err)
	}
	return v, nil
}

func runcCheck(ctx context.Context) Check {
	row := Check{Name: "runc"}
	path, err := exec.LookPath("runc")
	if err != nil {
		row.Status, row.Detail, row.Fix = Fail, "runc not found in PATH", fixInstall
		return row
	}
	out, err := command(ctx, path, "--version")
	if err == nil {
		out, err = parseRuncVersion(out)
	}
	if err != nil {
		row.Status, row.Detail, row.Fix = Warn, err.Error(), "check the runc at "+path+" by hand"
		return row
	}
	row.Status, row.Detail = OK, out+" at "+path
	return row
}

// toolCheck fails when program name, needed for the reason why, is not in PATH.
func toolCheck(name, why string) Check {
	path, err := exec.LookPath(name)
	if err != nil {
		return Check{Name: name, Status: Fail, Detail: name + " not found in PATH: " + why, Fix: fixInstall}
	}
	return Check{Name: name, Status: OK, Detail: "found at " + path}
}

// labToolsCheck fails when a program the lab builds simulated hosts with is not in PATH.
func labToolsCheck() Check {
	tools := []string{"nsenter", "unshare", "ip", "tc"}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return Check{Name: "lab tools", Status: Fail,
			Detail: "not found in PATH: " + strings.Join(missing, ", ") + " (the lab builds simulated hosts with them)",
			Fix:    fixInstall + "; it installs util-linux and iproute2"}
	}
	return Check{Name: "lab tools", Status: OK, Detail: strings.Join(tools, ", ") + " found"}
}

// diskCheck grades the space free in dir, where checkpoints (a container's whole memory)
// are written.
func diskCheck(dir string) Check {
	row := Check{Name: "checkpoint dir space"}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		row.Status, row.Detail = Fail, fmt.Sprintf("statfs %s: %v", dir, err)
		row.Fix = "create " + dir + " or choose another checkpoint directory"
		return row
	}
	unit := st.Frsize // statvfs(3) does the same: the fragment size, else the block size
	if unit == 0 {
		unit = st.Bsize
	}
	free := st.Bavail * uint64(unit)
	row.Detail = fmt.Sprintf("%s: %s free", dir, formatBytes(free))
	switch {
	case free < diskFailBelow:
		row.Status = Fail
		row.Detail += ", below " + formatBytes(diskFailBelow)
	case free < diskWarnBelow:
		row.Status = Warn
		row.Detail += ", below " + formatBytes(diskWarnBelow)
	default:
		row.Status = OK
		return row
	}
	row.Fix = "free space in " + dir + " or choose a checkpoint directory on a larger filesystem: " +
		"a checkpoint holds the container's whole memory"
	return row
}

func formatBytes(n uint64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func rootCheck() Check {
	if uid := os.Geteuid(); uid != 0 {
		return Check{Name: "root", Status: Fail,
			Detail: fmt.Sprintf("running as uid %d: CRIU, containerd and the lab need root", uid),
			Fix:    "run as root (sudo)"}
	}
	return Check{Name: "root", Status: OK, Detail: "running as root"}
}

// command runs name with args, bounded by ctx and commandTimeout, and returns its standard
// output. A failure's error carries CRIU-style "Error" lines from standard error, or its
// last line.
func command(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	var stdout, stderr strings.Builder
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	cmdline := strings.Join(append([]string{filepath.Base(name)}, args...), " ")
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s: %w", cmdline, ctx.Err())
	}
	if err != nil {
		if msg := errorLines(stderr.String()); msg != "" {
			return stdout.String(), fmt.Errorf("%s: %w: %s", cmdline, err, msg)
		}
		return stdout.String(), fmt.Errorf("%s: %w", cmdline, err)
	}
	return stdout.String(), nil
}

// errorLines picks what explains a failure from a program's standard error: the lines
// that CRIU marks "Error", else the last line.
func errorLines(stderr string) string {
	var errs []string
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "Error") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	return strings.TrimSpace(lines[len(lines)-1])
}
