package hooksock

import (
	"strings"
	"testing"
)

func TestCheckSocket(t *testing.T) {
	for _, tc := range []struct{ path, err string }{
		{"/run/ftwin-migrate/hook.sock", ""},
		{"/hook.sock", ""},
		{"", "empty"},
		{"run/hook.sock", "absolute"},
		{"/run/../../../etc/hook.sock", "clean"},
		{"/run//hook.sock", "clean"},
		{"/run/./hook.sock", "clean"},
		{"/run/hook.sock/", "clean"},
		{"/", "clean"},
	} {
		err := CheckSocket(tc.path)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("CheckSocket(%q) = %v, want %q", tc.path, err, tc.err)
		}
	}
}

func TestPath(t *testing.T) {
	if p, err := Path(1234, "/run/ftwin-migrate/hook.sock"); err != nil || p != "/proc/1234/root/run/ftwin-migrate/hook.sock" {
		t.Errorf("Path = %q, %v", p, err)
	}
	if _, err := Path(1234, "../x"); err == nil {
		t.Error("Path accepted a relative path")
	}
	if _, err := Path(0, "/hook.sock"); err == nil {
		t.Error("Path accepted pid 0")
	}
}
