// Package testbin builds the project's test workloads as static binaries, for tests that
// put them in container images.
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Counter is the import path of the stateful counter workload.
const Counter = "github.com/ftwin-migrate/ftwin-migrate/test/workloads/counter"

// Build compiles package pkg (an import path) with CGO_ENABLED=0 into a temporary directory of
// t and returns the binary's path, named after the package's last element.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}
