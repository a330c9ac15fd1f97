// Package testutil holds helpers for the project's tests. Production code never imports it.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequireRoot skips the test or benchmark unless it may run as an integration test: not
// under -short (make unit, which stays rootless), as root, with every one of tools on PATH.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (make unit skips it; make test runs it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (run `make install`)", tool)
		}
	}
}
