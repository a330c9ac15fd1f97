// Package install tests hack/install.sh on this machine for real: it installs what is missing,
// a second run changes nothing, and a failed check names what is missing. The tests need root
// (the installer installs Debian packages); `go test -short` skips them.
package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
)

const (
	sourcesFile = "/etc/apt/sources.list.d/ftwin-migrate.sources"
	prefsFile   = "/etc/apt/preferences.d/ftwin-migrate"
)

// repoRoot is two levels up from this package's directory, the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "install.sh")); err != nil {
		t.Fatalf("repository root %s has no hack/install.sh: %v", root, err)
	}
	return root
}

// kafkaVersion reads <kafka.version> from hack/kafka/pom.xml, as the installer does.
func kafkaVersion(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "hack", "kafka", "pom.xml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<kafka\.version>([^<]+)</kafka\.version>`).FindSubmatch(b)
	if m == nil {
		t.Fatal("hack/kafka/pom.xml has no <kafka.version>")
	}
	return strings.TrimSpace(string(m[1]))
}

// kafkaStamp is what the installer writes to a Kafka home's .complete: the version and the
// first 16 hex digits of the pom's SHA-256.
func kafkaStamp(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "hack", "kafka", "pom.xml"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return kafkaVersion(t, root) + " pom-sha256=" + hex.EncodeToString(sum[:])[:16]
}

// defaultKafkaHome is where the installer puts Kafka when FTWIN_KAFKA_HOME is not set.
func defaultKafkaHome(version string) string {
	if h := os.Getenv("FTWIN_KAFKA_HOME"); h != "" {
		return h
	}
	return "/opt/ftwin-migrate/kafka-" + version
}

type result struct {
	stdout, stderr string
	err            error
}

// runInstaller runs `bash hack/install.sh` from the repository root; kafkaHome, when not
// empty, becomes FTWIN_KAFKA_HOME.
func runInstaller(t *testing.T, root, kafkaHome string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "hack/install.sh")
	cmd.Dir = root
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FTWIN_KAFKA_HOME=") || kafkaHome == "" {
			env = append(env, kv)
		}
	}
	if kafkaHome != "" {
		env = append(env, "FTWIN_KAFKA_HOME="+kafkaHome)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

func (r result) String() string {
	return fmt.Sprintf("exit: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// assertNothingDone fails when a run's stderr says it installed or assembled anything, or does
// not end with the all-present line.
func assertNothingDone(t *testing.T, r result) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("installer failed:\n%s", r)
	}
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(line, "install: installing") || strings.HasPrefix(line, "install: assembling") ||
			strings.HasPrefix(line, "install: adding") || strings.HasPrefix(line, "install: apt-get update") ||
			strings.HasPrefix(line, "install: upgrading") || strings.HasPrefix(line, "install: writing") {
			t.Errorf("a rerun did work: %q\n%s", line, r)
		}
	}
	if got := lastLine(r.stderr); got != "install: all dependencies present" {
		t.Errorf("last line of stderr = %q, want %q\n%s", got, "install: all dependencies present", r)
	}
}

// libsListing lists the files of dir as "name size" lines, sorted.
func libsListing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d", e.Name(), fi.Size()))
	}
	sort.Strings(out)
	return out
}

// snapshot is what the installer may change on this machine: the installed Debian packages,
// the apt files it writes and the Kafka classpath.
func snapshot(t *testing.T, kafkaHome string) map[string]string {
	t.Helper()
	s := map[string]string{}
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Package} ${Version}\n").Output()
	if err != nil {
		t.Fatalf("dpkg-query: %v", err)
	}
	s["dpkg"] = string(out)
	for _, f := range []string{sourcesFile, prefsFile, filepath.Join(kafkaHome, ".complete")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("after an install: %v", err)
		}
		s[f] = string(b)
	}
	s["libs"] = strings.Join(libsListing(t, filepath.Join(kafkaHome, "libs")), "\n")
	return s
}

// diffLines describes the lines only in a and only in b.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var d []string
	for _, l := range strings.Split(a, "\n") {
		if !mb[l] {
			d = append(d, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ma[l] {
			d = append(d, "+ "+l)
		}
	}
	if len(d) == 0 {
		return "(same lines, different order or count)"
	}
	return strings.Join(d, "\n")
}

// TestSecondRunChangesNothing: after one run has installed everything, a second run installs
// nothing, assembles nothing, leaves packages, apt files and the Kafka classpath as they were
// and reports everything present.
func TestSecondRunChangesNothing(t *testing.T) {
	testutil.RequireRoot(t) // runs hack/install.sh for real
	root := repoRoot(t)
	home := defaultKafkaHome(kafkaVersion(t, root))

	if r := runInstaller(t, root, ""); r.err != nil {
		t.Fatalf("first run:\n%s", r)
	}
	before := snapshot(t, home)
	r := runInstaller(t, root, "")
	assertNothingDone(t, r)
	after := snapshot(t, home)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("the second run changed %s:\n%s", k, diffLines(v, after[k]))
		}
	}
	// Other Kafka versions' homes beside the default one (a 4.1.1 of an earlier install) are
	// left alone and named.
	others, _ := filepath.Glob(filepath.Join(filepath.Dir(home), "kafka-*", ".complete"))
	for _, marker := range others {
		other := filepath.Dir(marker)
		if other == home {
			continue
		}
		if !strings.Contains(r.stderr, "install: note: "+other+" (") {
			t.Errorf("the installer does not name the other Kafka home %s:\n%s", other, r)
		}
		if _, err := os.Stat(filepath.Join(other, "libs")); err != nil {
			t.Errorf("the other Kafka home %s lost its libs: %v", other, err)
		}
	}
	// The files the installer writes say what the README promises.
	if !strings.Contains(before[sourcesFile], "Suites: trixie forky") {
		t.Errorf("%s lacks the trixie and forky suites:\n%s", sourcesFile, before[sourcesFile])
	}
	if strings.Count(before[prefsFile], "Pin-Priority: 100") != 2 {
		t.Errorf("%s does not pin trixie and forky at 100:\n%s", prefsFile, before[prefsFile])
	}
}

// TestKafkaAssembledIntoFreshHome: pointed at an empty FTWIN_KAFKA_HOME, the installer
// assembles the broker classpath there from Maven; a rerun with the same home assembles nothing.
func TestKafkaAssembledIntoFreshHome(t *testing.T) {
	testutil.RequireRoot(t) // runs hack/install.sh for real
	root := repoRoot(t)
	version := kafkaVersion(t, root)
	home := filepath.Join(t.TempDir(), "kafka")

	r := runInstaller(t, root, home)
	if r.err != nil {
		t.Fatalf("install into %s:\n%s", home, r)
	}
	if !strings.Contains(r.stderr, "install: assembling Apache Kafka "+version+" into "+home) {
		t.Errorf("the run into a fresh home does not say it assembled Kafka:\n%s", r)
	}
	jar := filepath.Join(home, "libs", "kafka_2.13-"+version+".jar")
	if fi, err := os.Stat(jar); err != nil {
		t.Fatalf("broker jar not assembled: %v\n%s", err, r)
	} else if fi.Size() == 0 {
		t.Fatalf("%s is empty", jar)
	}
	if b, err := os.ReadFile(filepath.Join(home, ".complete")); err != nil || strings.TrimSpace(string(b)) != kafkaStamp(t, root) {
		t.Errorf(".complete marker = %q, %v; want %q", b, err, kafkaStamp(t, root))
	}
	// The broker needs more than the one jar: the Kafka modules it depends on come along, and
	// the tools' module; the SLF4J API is the one the log4j binding serves (2.x).
	for _, prefix := range []string{"kafka-server-", "kafka-clients-", "kafka-raft-", "kafka-metadata-", "log4j-core-", "kafka-tools-" + version, "slf4j-api-2."} {
		found := false
		for _, l := range libsListing(t, filepath.Join(home, "libs")) {
			found = found || strings.HasPrefix(l, prefix)
		}
		if !found {
			t.Errorf("%s/libs has no %s*.jar", home, prefix)
		}
	}
	libs := libsListing(t, filepath.Join(home, "libs"))

	r = runInstaller(t, root, home)
	assertNothingDone(t, r)
	if got := libsListing(t, filepath.Join(home, "libs")); strings.Join(got, "\n") != strings.Join(libs, "\n") {
		t.Errorf("the rerun changed %s/libs:\n%s", home, diffLines(strings.Join(libs, "\n"), strings.Join(got, "\n")))
	}
}

// TestFailedCheckNamesWhatIsMissing: a Kafka home marked complete (the stamp of this pom) but
// holding no jars is not repaired (the marker says it is done), so the final checks fail; the
// installer exits non-zero and names the missing jars and scripts.
func TestFailedCheckNamesWhatIsMissing(t *testing.T) {
	testutil.RequireRoot(t) // runs hack/install.sh for real
	root := repoRoot(t)
	version := kafkaVersion(t, root)
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".complete"), []byte(kafkaStamp(t, root)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	r := runInstaller(t, root, home)
	if r.err == nil {
		t.Fatalf("installer succeeded with no Kafka jars in %s:\n%s", home, r)
	}
	for _, want := range []string{
		"install: MISSING: kafka_2.13-" + version + ".jar in " + home + "/libs",
		"install: MISSING: kafka-tools-" + version + ".jar in " + home + "/libs",
		"install: MISSING: the Kafka tools' scripts in " + home + "/bin",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, r)
		}
	}
	if got := lastLine(r.stderr); got != "install: FAILED: see MISSING lines above" {
		t.Errorf("last line of stderr = %q, want the FAILED line", got)
	}
	// Only the Kafka checks fail: every other dependency is reported present.
	if n := strings.Count(r.stderr, "install: MISSING:"); n != 3 {
		t.Errorf("%d MISSING lines, want the 3 of Kafka:\n%s", n, r)
	}
	if strings.Contains(r.stderr, "install: assembling") {
		t.Errorf("the installer assembled Kafka despite the .complete marker:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(home, "libs")); err == nil {
		t.Errorf("the installer created %s/libs", home)
	}
}

// TestKafkaUpgradesLingeringOlderInstall: a Kafka home that holds an older install (Apache
// Kafka 4.1.1 as the installer of the time left it: its jars, a version-only .complete marker,
// no tools), as a CI machine may keep from earlier runs, is upgraded in place: the current
// version is assembled, none of the old jars stays on the classpath (libs/* would load both),
// the tools' scripts are written and run; a rerun changes nothing. The real 4.1.1 jars are
// used when /opt/ftwin-migrate/kafka-4.1.1 lingers on this machine, stand-ins named as they are
// otherwise.
func TestKafkaUpgradesLingeringOlderInstall(t *testing.T) {
	testutil.RequireRoot(t) // runs hack/install.sh for real
	root := repoRoot(t)
	version := kafkaVersion(t, root)
	const old = "4.1.1"
	home := filepath.Join(t.TempDir(), "kafka")
	libs := filepath.Join(home, "libs")
	if err := os.MkdirAll(libs, 0o755); err != nil {
		t.Fatal(err)
	}
	if src := "/opt/ftwin-migrate/kafka-" + old + "/libs"; fileExists(filepath.Join(src, "kafka_2.13-"+old+".jar")) {
		if out, err := exec.Command("cp", "-a", src+"/.", libs).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v: %s", src, err, out)
		}
		t.Logf("the lingering install is a copy of %s", src)
	} else {
		for _, n := range []string{"kafka_2.13-" + old + ".jar", "kafka-clients-" + old + ".jar", "kafka-server-" + old + ".jar", "slf4j-api-1.7.36.jar", "log4j-core-2.24.3.jar"} {
			if err := os.WriteFile(filepath.Join(libs, n), []byte("stand-in"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(home, ".complete"), []byte(old+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := runInstaller(t, root, home)
	if r.err != nil {
		t.Fatalf("upgrade of %s:\n%s", home, r)
	}
	t.Logf("upgrade from %s to %s took %v", old, version, time.Since(start).Round(100*time.Millisecond))
	for _, want := range []string{
		"install: upgrading Apache Kafka in " + home + ": found " + old + ", want " + kafkaStamp(t, root),
		"install: assembling Apache Kafka " + version + " into " + home,
		"install: writing " + home + "/bin/kafka-consumer-groups.sh",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the upgrade does not say %q:\n%s", want, r)
		}
	}
	listing := libsListing(t, libs)
	for _, l := range listing {
		if strings.Contains(l, "-"+old+".jar") || strings.HasPrefix(l, "slf4j-api-1.") || l == "stand-in" {
			t.Errorf("%s still holds %s after the upgrade", libs, l)
		}
	}
	for _, want := range []string{"kafka_2.13-" + version + ".jar", "kafka-tools-" + version + ".jar"} {
		if !fileExists(filepath.Join(libs, want)) {
			t.Errorf("%s lacks %s after the upgrade", libs, want)
		}
	}
	if fileExists(filepath.Join(home, "libs.new")) {
		t.Errorf("the upgrade left %s/libs.new", home)
	}
	if b, _ := os.ReadFile(filepath.Join(home, ".complete")); strings.TrimSpace(string(b)) != kafkaStamp(t, root) {
		t.Errorf(".complete = %q after the upgrade, want %q", b, kafkaStamp(t, root))
	}
	// The scripts run the new jars: kafka-topics.sh --version names the new version.
	out, err := exec.Command(filepath.Join(home, "bin", "kafka-topics.sh"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), version) {
		t.Errorf("kafka-topics.sh --version: %v: %s; want %s", err, out, version)
	}

	r = runInstaller(t, root, home)
	assertNothingDone(t, r)
	if got := libsListing(t, libs); strings.Join(got, "\n") != strings.Join(listing, "\n") {
		t.Errorf("the rerun changed %s:\n%s", libs, diffLines(strings.Join(listing, "\n"), strings.Join(got, "\n")))
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
