package doctor

import (
	"os"
	"path/filepath"
)

// cgroupFacts is what the cgroups check looks at.
type cgroupFacts struct {
	unifiedRoot bool // /sys/fs/cgroup is the cgroup v2 tree (cgroup.controllers at its root)
	hybrid      bool // v1 controllers with the v2 tree at /sys/fs/cgroup/unified
	v1Freezer   bool // the v1 freezer controller is mounted
	v2Freezer   bool // v2 groups have cgroup.freeze (Linux >= 5.2)
}

// Cgroups checks which cgroup hierarchy containers get here and that runc can freeze them (a
// checkpoint freezes the container first). containerd, runc and CRIU handle v1 and v2 alike;
// the row says which one this host runs, since hosts that exchange containers may differ.
func Cgroups() Check {
	const root = "/sys/fs/cgroup"
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	f := cgroupFacts{
		unifiedRoot: exists(filepath.Join(root, "cgroup.controllers")),
		hybrid:      exists(filepath.Join(root, "unified", "cgroup.controllers")),
		v1Freezer:   exists(filepath.Join(root, "freezer", "cgroup.procs")),
	}
	for _, dir := range []string{root, filepath.Join(root, "unified")} {
		if m, _ := filepath.Glob(filepath.Join(dir, "*", "cgroup.freeze")); len(m) > 0 {
			f.v2Freezer = true
		}
	}
	return cgroupCheck(f)
}

func cgroupCheck(f cgroupFacts) Check {
	row := Check{Name: "cgroups"}
	switch {
	case f.unifiedRoot && f.v2Freezer:
		row.Status, row.Detail = OK, "cgroup v2 (unified hierarchy) with its freezer"
	case f.unifiedRoot:
		row.Status, row.Detail = Fail, "cgroup v2 without cgroup.freeze: runc cannot freeze a container for its checkpoint"
		row.Fix = "use Linux >= 5.2"
	case f.v1Freezer && f.hybrid:
		row.Status, row.Detail = OK, "cgroup v1 controllers (freezer mounted) beside an unused v2 tree (hybrid)"
	case f.v1Freezer:
		row.Status, row.Detail = OK, "cgroup v1 (freezer mounted)"
	default:
		row.Status, row.Detail = Fail, "no cgroup freezer (neither a v2 tree at /sys/fs/cgroup nor a v1 freezer hierarchy): runc cannot freeze a container for its checkpoint"
		row.Fix = "mount the cgroup hierarchy (systemd does at boot; by hand: `mount -t cgroup2 none /sys/fs/cgroup`)"
	}
	return row
}
