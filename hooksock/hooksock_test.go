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

func TestInContainer(t *testing.T) {
	if s, err := InContainer(1234, "/run/ftwin-migrate/hook.sock"); err != nil || s != (Socket{Root: "/proc/1234/root", Path: "/run/ftwin-migrate/hook.sock"}) {
		t.Errorf("InContainer = %+v, %v", s, err)
	}
	if _, err := InContainer(1234, "../x"); err == nil {
		t.Error("InContainer accepted a relative path")
	}
	if _, err := InContainer(0, "/hook.sock"); err == nil {
		t.Error("InContainer accepted pid 0")
	}
}
