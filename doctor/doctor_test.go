package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
)

func TestParseCRIUVersion(t *testing.T) {
	for _, tc := range []struct {
		name, out, want string
	}{
		{"release", "Version: 4.2.1\n", "4.2.1"},
		{"two components", "Version: 4.2\n", "4.2"},
		{"git build", "Version: 4.2\nGitID: v4.2-12-gdeadbee\n", "4.2"},
		{"bookworm", "Version: 3.17.1\n", "3.17.1"},
		{"empty", "", ""},
		{"no number", "Version:\n", ""},
		{"not criu", "usage: criu ...\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCRIUVersion(tc.out)
			if got != tc.want || (err != nil) != (tc.want == "") {
				t.Errorf("parseCRIUVersion(%q) = %q, %v; want %q", tc.out, got, err, tc.want)
			}
		})
	}
}

func TestParseContainerdVersion(t *testing.T) {
	for _, tc := range []struct {
		name, out, want string
	}{
		{"debian", "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1\n", "1.7.24~ds1"},
		{"upstream", "containerd github.com/containerd/containerd v1.7.29 442cb34bda9a6a0fed82a2ca7cade05c5c749582\n", "1.7.29"},
		{"v2", "containerd github.com/containerd/containerd/v2 v2.0.0 207ad711eabd375a01713109a8a197d197ff6542\n", "2.0.0"},
		{"empty", "", ""},
		{"too short", "containerd github.com/containerd/containerd\n", ""},
		{"other program", "ctr github.com/containerd/containerd v1.7.29\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseContainerdVersion(tc.out)
			if got != tc.want || (err != nil) != (tc.want == "") {
				t.Errorf("parseContainerdVersion(%q) = %q, %v; want %q", tc.out, got, err, tc.want)
			}
		})
	}
}

func TestParseRuncVersion(t *testing.T) {
	for _, tc := range []struct {
		name, out, want string
	}{
		{"debian", "runc version 1.1.15+ds1\ncommit: 1.1.15+ds1-2+b4\nspec: 1.2.0\n", "1.1.15+ds1"},
		{"upstream", "runc version 1.2.4\ncommit: v1.2.4-0-g6c52b3f\n", "1.2.4"},
		{"empty", "", ""},
		{"no number", "runc version \n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRuncVersion(tc.out)
			if got != tc.want || (err != nil) != (tc.want == "") {
				t.Errorf("parseRuncVersion(%q) = %q, %v; want %q", tc.out, got, err, tc.want)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want version
		ok   bool
	}{
		{"4.2.1", version{4, 2, 1}, true},
		{"4.2", version{4, 2, 0}, true},
		{"v1.7.29", version{1, 7, 29}, true},
		{"1.7.24~ds1", version{1, 7, 24}, true},
		{"1.1.15+ds1", version{1, 1, 15}, true},
		{"6.18.44-fc-v669", version{6, 18, 44}, true},
		{"6.1.0-28-amd64", version{6, 1, 0}, true},
		{"4", version{}, false},
		{"4..2", version{}, false},
		{"1.2.3.4", version{}, false},
		{"", version{}, false},
		{"abc", version{}, false},
	} {
		got, err := parseVersion(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseVersion(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if !(version{4, 1, 1}).less(version{4, 2, 0}) || (version{4, 2, 0}).less(version{4, 2, 0}) || (version{4, 10, 0}).less(version{4, 2, 0}) {
		t.Error("version.less orders releases wrongly")
	}
}

func TestKernelCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release string
		criu    *version
		want    Status
		mention string
	}{
		{"criu 4.2.1 on 6.18", "6.18.44-fc-v669", &version{4, 2, 1}, OK, ""},
		{"criu 4.1.1 on 6.18", "6.18.44-fc-v669", &version{4, 1, 1}, Fail, "SO_PASSCRED"},
		{"criu 4.1.1 on 6.15", "6.15.2", &version{4, 1, 1}, OK, ""},
		{"criu 3.17.1 on 6.13", "6.13.0", &version{3, 17, 1}, Fail, "vvar_vclock"},
		{"criu 3.17.1 on 6.1", "6.1.0-28-amd64", &version{3, 17, 1}, OK, ""},
		{"no criu", "6.18.44-fc-v669", nil, OK, ""},
		{"odd release", "weird", &version{4, 2, 1}, Warn, "weird"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := kernelCheck(tc.release, tc.criu)
			if c.Status != tc.want || !strings.Contains(c.Detail, tc.mention) || (c.Status != OK) != (c.Fix != "") {
				t.Errorf("kernelCheck(%q, %v) = %+v; want %v mentioning %q, with a Fix iff not OK", tc.release, tc.criu, c, tc.want, tc.mention)
			}
		})
	}
}

func TestCRIUVersionCheck(t *testing.T) {
	if c := criuVersionCheck("/usr/sbin/criu", "4.2.1", version{4, 2, 1}); c.Status != OK {
		t.Errorf("criu 4.2.1: %+v; want OK", c)
	}
	c := criuVersionCheck("/usr/sbin/criu", "4.1.1", version{4, 1, 1})
	if c.Status != Fail || !strings.Contains(c.Detail, "inet socket") || !strings.Contains(c.Fix, "hack/install.sh") {
		t.Errorf("criu 4.1.1: %+v; want FAIL saying why and how to install", c)
	}
}

func TestHWBreakpointsCheck(t *testing.T) {
	if c := hwBreakpointsCheck(true, nil); c.Status != OK {
		t.Errorf("breakpoints fire: %+v; want OK", c)
	}
	c := hwBreakpointsCheck(false, nil)
	if c.Status != Warn || !strings.Contains(c.Detail, "CRIU_FAULT=130") || c.Fix == "" {
		t.Errorf("breakpoints do not fire: %+v; want WARN naming CRIU_FAULT=130, with a Fix", c)
	}
	if c := hwBreakpointsCheck(false, errors.New("probe broke")); c.Status != Warn || !strings.Contains(c.Detail, "probe broke") || c.Fix == "" {
		t.Errorf("probe failed: %+v; want WARN with the error and a Fix", c)
	}
}

func TestStatusJSON(t *testing.T) {
	b, err := json.Marshal(Report{Checks: []Check{{Name: "a", Status: Fail, Detail: "d", Fix: "f"}, {Name: "b", Status: OK}}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Checks []map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Checks[0]["status"] != "FAIL" || got.Checks[1]["status"] != "OK" || got.Checks[0]["fix"] != "f" {
		t.Errorf("JSON %s: want statuses as FAIL and OK and the fix", b)
	}
}

// TestRunMatchesCRIU runs the whole doctor and checks its CRIU answers against the CRIU
// command line, run independently here.
func TestRunMatchesCRIU(t *testing.T) {
	criu := requireCRIU(t)
	r := Run(context.Background())

	out, err := exec.Command(criu, "--version").Output()
	if err != nil {
		t.Fatalf("criu --version: %v", err)
	}
	if want := "Version: " + r.CRIUVersion; r.CRIUVersion == "" || !strings.Contains(string(out), want+"\n") {
		t.Errorf("CRIUVersion = %q; `criu --version` says %q", r.CRIUVersion, out)
	}

	if len(r.Features) != len(criuFeatures) {
		t.Errorf("Features = %v; want an answer for each of %d features", r.Features, len(criuFeatures))
	}
	for name, got := range r.Features {
		err := exec.Command(criu, "check", "--feature", name).Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("criu check --feature %s: %v", name, err)
		}
		if want := err == nil; got != want {
			t.Errorf("feature %s: doctor says %v, `criu check --feature %s` says %v", name, got, name, want)
		}
		row := findCheck(t, r, "criu feature "+name)
		if (row.Status == OK) != got {
			t.Errorf("feature %s available=%v but its row is %v", name, got, row.Status)
		}
	}

	if err := exec.Command(criu, "check").Run(); (err == nil) != (findCheck(t, r, "criu check").Status == OK) {
		t.Errorf("`criu check` returned %v but the doctor's row is %v", err, findCheck(t, r, "criu check").Status)
	}
}

// TestHWBreakpointsMatchCRIU cross-checks the probe with the failure it predicts: CRIU
// dumps a process without CRIU_FAULT where breakpoints fire, hangs where they do not, and
// dumps it with CRIUFaultEnv's environment either way.
func TestHWBreakpointsMatchCRIU(t *testing.T) {
	criu := requireCRIU(t)
	works, err := HWBreakpointsWork()
	if err != nil {
		t.Fatal(err)
	}
	env, err := CRIUFaultEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hardware breakpoints fire: %v; CRIU environment: %q", works, env)
	if works != (env == nil) || (!works && (len(env) != 1 || env[0] != "CRIU_FAULT=130")) {
		t.Fatalf("HWBreakpointsWork = %v but CRIUFaultEnv = %q", works, env)
	}

	const patience = 15 * time.Second // a dump of `sleep` takes well under a second
	finished, log := dumpSleep(t, criu, nil, patience)
	switch {
	case works && !finished:
		t.Fatalf("the probe says breakpoints fire, but `criu dump` without CRIU_FAULT did not finish in %v:\n%s", patience, tail(log))
	case works && strings.Contains(log, "Expecting exit"):
		// Compel logs "Expecting exit" only when it steps through syscalls with
		// PTRACE_SYSCALL, i.e. when it did not stop the parasite with a breakpoint.
		t.Fatalf("the probe says breakpoints fire, but CRIU did not use one:\n%s", tail(log))
	case !works && finished:
		t.Fatalf("the probe says breakpoints do not fire, but `criu dump` without CRIU_FAULT finished")
	}
	if !works {
		if finished, log := dumpSleep(t, criu, env, patience); !finished {
			t.Fatalf("`criu dump` with %q did not finish in %v:\n%s", env, patience, tail(log))
		}
	}
}

// dumpSleep checkpoints a `sleep` (left running) with criu and extra environment env, and
// reports whether the dump succeeded within patience, with criu's log.
func dumpSleep(t *testing.T, criu string, env []string, patience time.Duration) (bool, string) {
	t.Helper()
	sleep := exec.Command("sleep", "1000")
	sleep.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // a session leader: no --shell-job needed
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = sleep.Process.Kill()
		_ = sleep.Wait()
	}()

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	dump := exec.CommandContext(ctx, criu, "dump", "--tree", strconv.Itoa(sleep.Process.Pid), "--images-dir", dir,
		"--leave-running", "--log-file", "dump.log", "-v4")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRIU_FAULT=") {
			dump.Env = append(dump.Env, kv)
		}
	}
	dump.Env = append(dump.Env, env...)
	dump.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dump.Cancel = func() error { return syscall.Kill(-dump.Process.Pid, syscall.SIGKILL) }
	err := dump.Run()
	log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
	if err != nil && ctx.Err() == nil {
		t.Fatalf("criu dump failed (not a hang): %v\n%s", err, tail(string(log)))
	}
	return err == nil, string(log)
}

// TestDiskCheck mounts small tmpfs filesystems and checks how their free space is graded.
func TestDiskCheck(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		size string
		want Status
	}{
		{"64m", Fail},
		{"1g", Warn},
		{"3g", OK},
	} {
		t.Run(tc.size, func(t *testing.T) {
			dir := mountTmpfs(t, tc.size)
			c := diskCheck(dir)
			if c.Status != tc.want || !strings.Contains(c.Detail, dir) || (c.Status != OK) != (c.Fix != "") {
				t.Errorf("diskCheck on a %s tmpfs = %+v; want %v, naming the directory, with a Fix iff not OK", tc.size, c, tc.want)
			}
		})
	}
	if c := diskCheck(filepath.Join(t.TempDir(), "missing")); c.Status != Fail || c.Fix == "" {
		t.Errorf("diskCheck on a missing directory = %+v; want FAIL with a Fix", c)
	}
}

// TestReportTable runs the doctor with checkpoints going to a tiny tmpfs, which must make
// it report a blocker, and checks the table and Blockers against the rows.
func TestReportTable(t *testing.T) {
	requireCRIU(t)
	dir := mountTmpfs(t, "64m")
	r := Run(context.Background(), WithCheckpointDir(dir))
	if c := findCheck(t, r, "checkpoint dir space"); c.Status != Fail {
		t.Errorf("checkpoint dir on a 64 MiB tmpfs: %+v; want FAIL", c)
	}

	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	table := buf.String()
	t.Logf("\n%s", table)
	names := []string{"kernel", "criu", "criu check", "hardware breakpoints", "containerd", "containerd daemon",
		"runc", "clocks", "cgroups", "containerd-shim-runc-v2", "iptables-restore", "lab tools", "apache kafka", "checkpoint dir space", "root"}
	for _, f := range criuFeatures {
		names = append(names, "criu feature "+f.name)
	}
	for _, n := range names {
		findCheck(t, r, n)
	}
	if len(r.Checks) != len(names) {
		t.Errorf("%d rows; want %d", len(r.Checks), len(names))
	}
	for _, c := range r.Checks {
		if !strings.Contains(table, c.Name) || !strings.Contains(table, c.Detail) {
			t.Errorf("table lacks row %q", c.Name)
		}
		if c.Status != OK && (c.Fix == "" || !strings.Contains(table, "fix: "+c.Fix)) {
			t.Errorf("row %q is %v but its Fix %q is not in the table", c.Name, c.Status, c.Fix)
		}
	}
	if lines := strings.Count(table, "\n"); lines != 1+len(r.Checks)+countNotOK(r) {
		t.Errorf("table has %d lines; want a header, %d rows and %d fix lines", lines, len(r.Checks), countNotOK(r))
	}

	blockers := r.Blockers()
	for _, b := range blockers {
		if b.Status != Fail {
			t.Errorf("blocker %q is %v", b.Name, b.Status)
		}
	}
	if len(blockers) != countStatus(r, Fail) || len(blockers) == 0 {
		t.Errorf("Blockers() = %d rows; want the %d FAIL rows", len(blockers), countStatus(r, Fail))
	}
	var warnsOnly Report
	for _, c := range r.Checks {
		if c.Status != Fail {
			warnsOnly.Checks = append(warnsOnly.Checks, c)
		}
	}
	if b := warnsOnly.Blockers(); len(b) != 0 {
		t.Errorf("a report without FAIL rows has blockers %v", b)
	}
}

// TestRunWithoutTools runs the doctor with nothing in PATH: every missing program is a
// blocker with a Fix.
func TestRunWithoutTools(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	r := Run(context.Background())
	for _, name := range []string{"criu", "containerd", "runc", "containerd-shim-runc-v2", "iptables-restore", "lab tools"} {
		if c := findCheck(t, r, name); c.Status != Fail || c.Fix == "" {
			t.Errorf("row %q with an empty PATH: %+v; want FAIL with a Fix", name, c)
		}
	}
	if c := findCheck(t, r, "hardware breakpoints"); c.Status != Warn || c.Fix == "" {
		t.Errorf("hardware breakpoints without `true` to probe with: %+v; want WARN with a Fix", c)
	}
	if r.CRIUVersion != "" || r.Features != nil {
		t.Errorf("without criu: CRIUVersion %q, Features %v; want neither", r.CRIUVersion, r.Features)
	}
}

// TestRunWithOldCRIU puts a stand-in for CRIU 4.1.1 first in PATH: on Linux >= 6.16 both
// the kernel and the CRIU rows must fail.
func TestRunWithOldCRIU(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\ncase \"$1\" in\n--version) echo 'Version: 4.1.1';;\ncheck) [ $# -eq 1 ] && echo 'Looks good.' || exit 1;;\nesac\n"
	if err := os.WriteFile(filepath.Join(dir, "criu"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	r := Run(context.Background())
	if r.CRIUVersion != "4.1.1" {
		t.Fatalf("CRIUVersion = %q; want the stand-in's 4.1.1", r.CRIUVersion)
	}
	if c := findCheck(t, r, "criu"); c.Status != Fail || c.Fix == "" {
		t.Errorf("criu 4.1.1: %+v; want FAIL with a Fix", c)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	kernel, err := parseVersion(unix.ByteSliceToString(uts.Release[:]))
	if err != nil {
		t.Fatal(err)
	}
	if c := findCheck(t, r, "kernel"); (c.Status == Fail) != !kernel.less(version{6, 16, 0}) {
		t.Errorf("criu 4.1.1 on Linux %v: kernel row %+v", kernel, c)
	}
	for name, ok := range r.Features {
		if ok {
			t.Errorf("feature %s available, but the stand-in fails every `criu check --feature`", name)
		}
	}
}

// TestContainerdDaemonCheck checks a daemon that runs and addresses where none does.
func TestContainerdDaemonCheck(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "containerd.sock")
	if c := containerdDaemonCheck(ctx, missing, true); c.Status != Fail || c.Fix == "" {
		t.Errorf("requested address without a daemon: %+v; want FAIL with a Fix", c)
	}
	if c := containerdDaemonCheck(ctx, missing, false); c.Status != Warn || !strings.Contains(c.Detail, "the lab starts its own") {
		t.Errorf("default address without a daemon: %+v; want WARN", c)
	}

	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatalf("containerd: %v (run `make install`)", err)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want, err := parseContainerdVersion(string(out))
	if err != nil {
		t.Fatal(err)
	}
	sock := startContainerd(t, bin)
	c := containerdDaemonCheck(ctx, sock, true)
	if c.Status != OK || !strings.Contains(c.Detail, want) { // the daemon may say v2.3.7
		t.Errorf("running daemon: %+v; want OK with version %s", c, want)
	}
}

// startContainerd starts a private containerd (no CRI plugin) and returns its socket.
func startContainerd(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	cmd := exec.Command(bin, "--config", config, "--address", sock,
		"--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not create %s:\n%s", sock, logs.String())
		}
	}
}

// requireCRIU skips the test where CRIU is not installed and returns its path.
func requireCRIU(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	path, err := exec.LookPath("criu")
	if err != nil {
		t.Skipf("criu is not installed (run `make install`): %v", err)
	}
	return path
}

// mountTmpfs mounts a tmpfs of the given size in a temporary directory until the test ends.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a %s tmpfs on %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func findCheck(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no row %q in %+v", name, r.Checks)
	return Check{}
}

func countStatus(r Report, s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

func countNotOK(r Report) int { return len(r.Checks) - countStatus(r, OK) }

// tail returns the last lines of a CRIU log, enough to see where it stopped.
func tail(log string) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return strings.Join(lines, "\n")
}

// TestKafkaCheck: a home with the broker and tools jars of broker.KafkaVersion is OK; one with
// only an older version is a warning that names what it found and how to fix it.
func TestKafkaCheck(t *testing.T) {
	base := t.TempDir()
	cur := filepath.Join(base, "kafka-"+broker.KafkaVersion)
	old := filepath.Join(base, "kafka-4.1.1")
	for dir, jars := range map[string][]string{
		cur: {"kafka_2.13-" + broker.KafkaVersion + ".jar", "kafka-tools-" + broker.KafkaVersion + ".jar"},
		old: {"kafka_2.13-4.1.1.jar"},
	} {
		if err := os.MkdirAll(filepath.Join(dir, "libs"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, j := range jars {
			if err := os.WriteFile(filepath.Join(dir, "libs", j), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if c := kafkaCheck(cur); c.Status != OK {
		t.Errorf("current home: %+v; want OK", c)
	}
	if err := os.RemoveAll(cur); err != nil {
		t.Fatal(err)
	}
	c := kafkaCheck(cur)
	if c.Status != Warn || !strings.Contains(c.Detail, "found 4.1.1 in "+old) || !strings.Contains(c.Fix, "make install") {
		t.Errorf("only 4.1.1 there: %+v; want WARN naming it, with the fix", c)
	}
}
