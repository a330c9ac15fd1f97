package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/ctrd"
	"github.com/ftwin-migrate/ftwin-migrate/internal/wait"
)

// Leftovers is what exists of a lab, found by its names and paths.
type Leftovers struct {
	NetNS     []string // network namespaces ftl-NAME-*
	Links     []string // ftb-NAME and ftv-NAME-*
	Processes []int    // processes whose command line names the lab's directory, and container inits
	Mounts    []string // mount points under the lab's directory
	Cgroups   []string // cgroup directories of the lab's containers (see Host.CgroupsPath)
	Dir       string   // the lab's directory, if it exists
}

// Empty reports whether nothing of the lab is left.
func (f Leftovers) Empty() bool {
	return len(f.NetNS)+len(f.Links)+len(f.Processes)+len(f.Mounts)+len(f.Cgroups) == 0 && f.Dir == ""
}

func (f Leftovers) String() string {
	var parts []string
	add := func(what string, n int, items string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s (%s)", n, what, items))
		}
	}
	add("network namespaces", len(f.NetNS), strings.Join(f.NetNS, " "))
	add("links", len(f.Links), strings.Join(f.Links, " "))
	add("processes", len(f.Processes), strings.Trim(fmt.Sprint(f.Processes), "[]"))
	add("mounts", len(f.Mounts), strings.Join(f.Mounts, " "))
	add("cgroup directories", len(f.Cgroups), strings.Join(f.Cgroups, " "))
	if f.Dir != "" {
		parts = append(parts, "directory "+f.Dir)
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, "; ")
}

// Find lists what exists of lab name under baseDir, running or left by a crashed run.
func Find(baseDir, name string) Leftovers {
	dir := Dir(baseDir, name)
	var f Leftovers
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "ftl-"+name+"-") {
				f.NetNS = append(f.NetNS, e.Name())
			}
		}
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if i.Name == "ftb-"+name || strings.HasPrefix(i.Name, "ftv-"+name+"-") {
				f.Links = append(f.Links, i.Name)
			}
		}
	}
	f.Processes = append(containerInits(dir), ctrd.PidsMentioning(dir+"/")...)
	f.Mounts = ctrd.MountsUnder(dir)
	f.Cgroups = cgroupDirs(name)
	if _, err := os.Stat(dir); err == nil {
		f.Dir = dir
	}
	return f
}

func containerInits(dir string) []int {
	var pids []int
	hosts, _ := filepath.Glob(filepath.Join(dir, "hosts", "*"))
	for _, h := range hosts {
		pids = append(pids, ctrd.ContainerInits(h)...)
	}
	return pids
}

// Teardown removes everything of lab name under baseDir: processes (containers, shims,
// daemons, brokers), mounts, network namespaces, links and the lab's directory. It works on a
// running lab and on the leftovers of a crashed one, and is a no-op when nothing is left.
func Teardown(ctx context.Context, baseDir, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab: name %q: want 1 to 8 characters of [a-z0-9]", name)
	}
	dir := Dir(baseDir, name)
	var errs []error
	hosts, _ := filepath.Glob(filepath.Join(dir, "hosts", "*"))
	for _, h := range hosts {
		if err := ctrd.Kill(ctx, h); err != nil {
			errs = append(errs, err)
		}
	}
	// Brokers and anything else started with the lab's directory on its command line.
	for _, pid := range ctrd.PidsMentioning(dir + "/") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Containers of a crashed run may be frozen (a migration's source, its migrator killed): a
	// frozen process does not die of SIGKILL until it is thawed. Thaw the lab's cgroups and
	// kill what is in them.
	for _, d := range cgroupDirs(name) {
		_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0o644) // cgroup v1
		_ = os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0o644)      // cgroup v2
		if procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(procs)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	// Give them up to 10s to be gone, even when ctx is done: the rest of the teardown goes on
	// in any case.
	gone, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	_ = wait.Until(gone, 50*time.Millisecond, func() (bool, error) { return len(ctrd.PidsMentioning(dir+"/")) == 0, nil })
	cancel()
	for _, m := range ctrd.MountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("lab: unmount %s: %w", m, err))
		}
	}
	f := Find(baseDir, name)
	for _, ns := range f.NetNS {
		if err := run(ctx, "ip", "netns", "delete", ns); err != nil {
			errs = append(errs, err)
		}
	}
	// A veth goes with its peer's namespace, asynchronously: one may vanish under us.
	for _, link := range Find(baseDir, name).Links {
		if err := run(ctx, "ip", "link", "delete", link); err != nil && !strings.Contains(err.Error(), "Cannot find device") && !strings.Contains(err.Error(), "No such device") {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("lab: remove %s: %w", dir, err))
	}
	// runc removes a container's own cgroup but leaves its parents; cgroup directories go with
	// rmdir, deepest first, once no process is left in them.
	// A process killed a moment ago may take a while to leave its cgroup (EBUSY until then).
	for _, d := range cgroupDirs(name) {
		var err error
		busy, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = wait.Until(busy, 50*time.Millisecond, func() (bool, error) {
			err = syscall.Rmdir(d)
			return !errors.Is(err, syscall.EBUSY), nil
		})
		cancel()
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("lab: remove cgroup %s: %w", d, err))
		}
	}
	// The shared parent goes with the last lab (it stays, busy, while another lab has one).
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/ftwin-lab")
	for _, p := range append(parents, "/sys/fs/cgroup/ftwin-lab") {
		_ = syscall.Rmdir(p)
	}
	if left := Find(baseDir, name); !left.Empty() {
		errs = append(errs, fmt.Errorf("lab: after teardown of %q still present: %s", name, left))
	}
	return errors.Join(errs...)
}

// cgroupDirs lists the cgroup directories of lab name in every mounted hierarchy (cgroup v1
// controllers and the v2 unified tree), deepest first.
func cgroupDirs(name string) []string {
	var roots []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/ftwin-lab/" + name, "/sys/fs/cgroup/ftwin-lab/" + name} {
		m, _ := filepath.Glob(pattern)
		roots = append(roots, m...)
	}
	var dirs []string
	for _, r := range roots {
		_ = filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}
