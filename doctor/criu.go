package doctor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// Every fix that comes down to installing software points at the project's installer.
const fixInstall = "run `make install` (hack/install.sh)"

// minCRIU is the oldest CRIU ftwin-migrate works with.
var minCRIU = version{4, 2, 0}

// kernelCRIUConflicts lists kernels that older CRIU releases cannot handle, newest first.
// Both were measured on this project's hosts (see ENVIRONMENT.md).
var kernelCRIUConflicts = []struct {
	kernel, criu version // a kernel >= kernel needs CRIU >= criu
	why          string
}{
	{version{6, 16, 0}, version{4, 2, 0}, "Linux 6.16 restricted SO_PASSCRED/SO_PASSSEC to AF_UNIX and netlink " +
		"sockets: CRIU older than 4.2 cannot dump a process that owns an inet socket"},
	{version{6, 13, 0}, version{4, 1, 0}, "Linux 6.13 maps a [vvar_vclock] area: CRIU older than 4.1 fails " +
		"with `vdso: Unexpected rt vDSO area bounds`"},
}

// criuFeature is an optional CRIU capability that migration can use.
type criuFeature struct {
	name      string // as `criu check --feature NAME` knows it
	available string // what the host can do with it
	missing   string // what the host cannot do without it
	fix       string // what to do when it is missing
}

var criuFeatures = []criuFeature{{
	name:      "mem_dirty_track",
	available: "pre-copy (iterative pre-dump) possible",
	missing:   "pre-copy unavailable: soft-dirty memory tracking is off in this kernel",
	fix:       "use a kernel built with CONFIG_MEM_SOFT_DIRTY (most distribution kernels are); until then containers migrate by stop-and-copy",
}, {
	name:      "uffd-noncoop",
	available: "post-copy (lazy pages) possible",
	missing:   "post-copy unavailable: the kernel lacks non-cooperative userfaultfd",
	fix:       "use a kernel built with CONFIG_USERFAULTFD (Linux >= 4.11); until then containers migrate without lazy pages",
}, {
	name:      "tcp_half_closed",
	available: "half-closed TCP connections can be checkpointed",
	missing:   "a container holding a half-closed TCP connection cannot be dumped with --tcp-established",
	fix:       "use Linux >= 4.11 (TCP repair of FIN states), or make sure the workload closes connections fully",
}}

// checkCRIU adds the kernel row, the CRIU version and `criu check` rows and a row per
// optional feature, and fills in r.CRIUVersion and r.Features.
func (r *Report) checkCRIU(ctx context.Context) {
	release := "unknown"
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		release = unix.ByteSliceToString(uts.Release[:])
	}
	path, installed, err := r.findCRIU(ctx)
	if err != nil {
		r.Checks = append(r.Checks, kernelCheck(release, nil),
			Check{Name: "criu", Status: Fail, Detail: err.Error(), Fix: fixInstall})
		return
	}
	r.Checks = append(r.Checks,
		kernelCheck(release, &installed),
		criuVersionCheck(path, r.CRIUVersion, installed),
		criuCheck(ctx, path))

	r.Features = make(map[string]bool)
	for _, f := range criuFeatures {
		ok, err := featureAvailable(ctx, path, f.name)
		row := Check{Name: "criu feature " + f.name}
		switch {
		case err != nil:
			row.Status, row.Detail = Warn, err.Error()
			row.Fix = "run `criu check --feature " + f.name + "` by hand and see what it says"
		case ok:
			r.Features[f.name] = true
			row.Status, row.Detail = OK, f.available
		default:
			r.Features[f.name] = false
			row.Status, row.Detail, row.Fix = Warn, f.missing, f.fix
		}
		r.Checks = append(r.Checks, row)
	}
}

// findCRIU looks CRIU up in PATH and asks its version, which it records in r.CRIUVersion.
func (r *Report) findCRIU(ctx context.Context) (path string, installed version, err error) {
	if path, err = exec.LookPath("criu"); err != nil {
		return "", version{}, errors.New("criu not found in PATH")
	}
	out, err := command(ctx, path, "--version")
	if err != nil {
		return "", version{}, err
	}
	release, err := parseCRIUVersion(out)
	if err != nil {
		return "", version{}, fmt.Errorf("criu at %s: %w", path, err)
	}
	if installed, err = parseVersion(release); err != nil {
		return "", version{}, fmt.Errorf("criu at %s: %w", path, err)
	}
	r.CRIUVersion = release
	return path, installed, nil
}

// kernelCheck reports the running kernel and whether the installed CRIU (nil when unknown)
// can handle it.
func kernelCheck(release string, criu *version) Check {
	row := Check{Name: "kernel", Status: OK, Detail: "Linux " + release}
	kernel, err := parseVersion(release)
	if err != nil {
		row.Status, row.Detail, row.Fix = Warn, fmt.Sprintf("Linux %q: %v", release, err),
			"check by hand that the installed CRIU supports this kernel"
		return row
	}
	if criu == nil {
		return row
	}
	for _, c := range kernelCRIUConflicts {
		if !kernel.less(c.kernel) && criu.less(c.criu) {
			row.Status = Fail
			row.Detail = fmt.Sprintf("Linux %s with CRIU %s: %s", release, criu, c.why)
			row.Fix = "install CRIU >= " + c.criu.String() + ": " + fixInstall
			return row
		}
	}
	return row
}

func criuVersionCheck(path, release string, installed version) Check {
	row := Check{Name: "criu", Status: OK, Detail: release + " at " + path}
	if installed.less(minCRIU) {
		row.Status = Fail
		row.Detail += ": ftwin-migrate needs CRIU >= " + minCRIU.String() +
			" (older releases cannot dump a process that owns an inet socket on Linux >= 6.16, and fail outright on Linux >= 6.13)"
		row.Fix = fixInstall + "; it installs CRIU 4.2.1 from Debian forky"
	}
	return row
}

// criuCheck runs `criu check`: the kernel features CRIU always needs.
func criuCheck(ctx context.Context, path string) Check {
	row := Check{Name: "criu check"}
	out, err := command(ctx, path, "check")
	if err != nil {
		row.Status, row.Detail = Fail, err.Error()
		row.Fix = "run `criu check` to see what is wrong; use a kernel built with CONFIG_CHECKPOINT_RESTORE " +
			"and the features it names, or a CRIU release that knows this kernel (" + fixInstall + ")"
		return row
	}
	row.Status, row.Detail = OK, strings.TrimSpace(out)
	return row
}

// featureAvailable reports what `criu check --feature name` says: available when it exits 0.
//
// The command line is asked rather than go-criu's FeatureCheck RPC, which in go-criu v7.2.0
// returns the request instead of CRIU's answer (every feature asked for looks available).
func featureAvailable(ctx context.Context, criu, name string) (bool, error) {
	_, err := command(ctx, criu, "check", "--feature", name)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &exit):
		return false, nil
	}
	return false, err
}
