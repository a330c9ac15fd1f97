package doctor

import (
	"errors"
	"strings"
	"testing"
)

func TestClockCheck(t *testing.T) {
	cases := []struct {
		name   string
		f      clockFacts
		status Status
		says   string
	}{
		{"all there", clockFacts{timeNamespaces: true, criuTimens: true, runc: "1.3.6+ds1"}, OK, "runc 1.3.6+ds1 execs into it"},
		{"no time namespaces", clockFacts{criuTimens: true, runc: "1.3.6"}, Warn, "no time namespaces in this kernel"},
		{"criu cannot be asked", clockFacts{timeNamespaces: true, criuErr: errors.New("criu not found")}, Warn, "criu not found"},
		{"criu without timens", clockFacts{timeNamespaces: true, runc: "1.3.6"}, Warn, "CRIU cannot restore time namespaces"},
		{"old runc", clockFacts{timeNamespaces: true, criuTimens: true, runc: "1.1.15"}, Warn, "runc 1.1.15 execs processes into the host's time namespace"},
		{"runc unknown", clockFacts{timeNamespaces: true, criuTimens: true}, Warn, "runc's version is unknown"},
		{"runc 1.2.0", clockFacts{timeNamespaces: true, criuTimens: true, runc: "1.2.0"}, OK, "execs into it"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := clockCheck(c.f)
			if got.Status != c.status || !strings.Contains(got.Detail, c.says) {
				t.Fatalf("clockCheck(%+v) = %v %q, want %v and %q", c.f, got.Status, got.Detail, c.status, c.says)
			}
			if got.Status != OK && got.Fix == "" {
				t.Fatalf("a %v row without a fix: %+v", got.Status, got)
			}
		})
	}
}
