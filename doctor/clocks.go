package doctor

import (
	"context"
	"os"
	"os/exec"
)

// minRuncClocks is the oldest runc whose exec joins the time namespace CRIU restored a
// container into (runc 1.1.15 has no time namespace support: an exec'd process lands in the
// host's and sees the host's clocks; 1.2.7 and 1.3.0 join it, measured on this project's hosts).
var minRuncClocks = version{1, 2, 0}

// clockFacts is what the clock check looks at.
type clockFacts struct {
	timeNamespaces bool   // the kernel has them (/proc/self/ns/time; Linux >= 5.6)
	criuTimens     bool   // `criu check --feature timens` passes (CRIU >= 3.14)
	criuErr        error  // CRIU could not be asked
	runc           string // runc's version ("" if unknown)
}

// Clocks checks whether a container restored on this host keeps its own clocks. Real hosts'
// CLOCK_MONOTONIC and CLOCK_BOOTTIME differ by their uptimes: CRIU restores a process into a
// time namespace of its own whose clocks continue the source's, and runc (>= 1.2) makes
// processes exec'd into the container join it. Without that, a restored process's timers
// stall (target behind) or fire at once (target ahead) by the difference of the uptimes.
// The agent reports a non-OK row to the migrator, which warns.
func Clocks(ctx context.Context) Check {
	var f clockFacts
	_, err := os.Stat("/proc/self/ns/time")
	f.timeNamespaces = err == nil
	if path, err := exec.LookPath("criu"); err == nil {
		f.criuTimens, f.criuErr = featureAvailable(ctx, path, "timens")
	} else {
		f.criuErr = err
	}
	if path, err := exec.LookPath("runc"); err == nil {
		if out, err := command(ctx, path, "--version"); err == nil {
			f.runc, _ = parseRuncVersion(out)
		}
	}
	return clockCheck(f)
}

func clockCheck(f clockFacts) Check {
	row := Check{Name: "clocks"}
	switch {
	case !f.timeNamespaces:
		row.Status = Warn
		row.Detail = "no time namespaces in this kernel: a container restored here sees this host's monotonic clock, so its timers stall or fire early by the difference of the hosts' uptimes"
		row.Fix = "use Linux >= 5.6 (CONFIG_TIME_NS)"
	case f.criuErr != nil:
		row.Status, row.Detail = Warn, "could not ask CRIU about time namespaces: "+f.criuErr.Error()
		row.Fix = "run `criu check --feature timens` by hand"
	case !f.criuTimens:
		row.Status = Warn
		row.Detail = "CRIU cannot restore time namespaces: a container restored here sees this host's monotonic clock"
		row.Fix = fixInstall + " (CRIU >= 3.14)"
	default:
		v, err := parseVersion(f.runc)
		switch {
		case f.runc == "" || err != nil:
			row.Status, row.Detail = Warn, "restored containers keep their clocks (CRIU restores their time namespace); runc's version is unknown, so a process exec'd into one may see the host's clock"
			row.Fix = "check `runc --version` (>= " + minRuncClocks.String() + " joins the container's time namespace)"
		case v.less(minRuncClocks):
			row.Status = Warn
			row.Detail = "restored containers keep their clocks, but runc " + f.runc + " execs processes into the host's time namespace: they see a clock the hosts' uptime difference away from the container's"
			row.Fix = fixInstall + " (runc >= " + minRuncClocks.String() + ")"
		default:
			row.Status = OK
			row.Detail = "restored containers keep their CLOCK_MONOTONIC and CLOCK_BOOTTIME (CRIU's time namespace), and runc " + f.runc + " execs into it"
		}
	}
	return row
}
