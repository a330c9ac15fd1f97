package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMount(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		in      string
		want    Mount
		wantErr string
	}{
		{dir + ":/data", Mount{Source: dir, Destination: "/data"}, ""},
		{dir + ":/data:ro", Mount{Source: dir, Destination: "/data", ReadOnly: true}, ""},
		{dir + ":/data:rw", Mount{Source: dir, Destination: "/data"}, ""},
		{dir, Mount{}, "want HOST-PATH:CONTAINER-PATH[:ro|rw]"},
		{dir + ":/data:ro:x", Mount{}, "want HOST-PATH:CONTAINER-PATH[:ro|rw]"},
		{dir + ":/data:rx", Mount{}, `option "rx": want ro or rw`},
		{"data:/data", Mount{}, "must be absolute"},
		{dir + ":data", Mount{}, "must be absolute"},
		{filepath.Join(dir, "missing") + ":/data", Mount{}, "no such file or directory"},
	} {
		got, err := ParseMount(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseMount(%q) error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMount(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestWorkloadCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bin")
	if err := os.WriteFile(file, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		w       Workload
		wantErr string
	}{
		{Workload{ID: "a", Binary: file}, ""},
		{Workload{ID: "a", ImageArchive: file, Entrypoint: []string{"/x"}}, ""},
		{Workload{ID: "a", Image: "kcat"}, ""},
		{Workload{ID: "a"}, "no binary, image archive or image"},
		{Workload{ID: "a", Binary: file, ImageArchive: file}, "not both"},
		{Workload{ID: "a", Binary: file, Entrypoint: []string{"/x"}}, "entrypoint"},
		{Workload{ID: "a", ImageArchive: filepath.Join(dir, "missing.tar")}, "missing.tar: no such file"},
		{Workload{ID: "a", ImageArchive: dir}, "is not a regular file"},
		{Workload{ID: "a", Image: "x", Mounts: []Mount{{Source: filepath.Join(dir, "nope"), Destination: "/d"}}}, "host path"},
		{Workload{ID: "a", Image: "x", WorkingDir: "rel"}, "must be absolute"},
	} {
		err := tc.w.check()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("check(%+v) = %v, want %q", tc.w, err, tc.wantErr)
		}
	}
}
