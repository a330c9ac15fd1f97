package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runPlacementApp(t *testing.T, args ...string) error {
	t.Helper()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	return app.Run(append([]string{"ftwin-migrate"}, args...))
}

// Bad input to drain, cordon and controller gets a clear error before anything is touched.
func TestPlacementCommandsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("hosts: {cloud: {role: cloud}}\nrules: [{name: x, when: 'twin.p99 > 1', to: [cloud]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("hosts: {cloud: {role: cloud}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"drain", "--policy", good}, "one argument, the host"},
		{[]string{"drain", "--policy", bad, "fog1"}, "rule x: when"},
		{[]string{"drain", "--policy", filepath.Join(dir, "none.yaml"), "fog1"}, "read policy"},
		{[]string{"drain", "--policy", good, "--concurrency", "0", "fog1"}, "--concurrency 0"},
		{[]string{"drain", "--policy", good, "--base-dir", dir, "--name", "nolab", "fog1"}, `lab "nolab" is not up`},
		{[]string{"cordon", "--base-dir", dir, "--name", "nolab", "fog1"}, `lab "nolab" is not up`},
		{[]string{"uncordon"}, "one argument, the host"},
		{[]string{"controller", "--policy", bad}, "rule x: when"},
		{[]string{"demo", "--scenario", "mars"}, "--scenario"},
	} {
		err := runPlacementApp(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
