package scenario

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindStreamsApp(t *testing.T) {
	dir := t.TempDir()
	if _, err := FindStreamsApp(dir); err == nil || !strings.Contains(err.Error(), "make java") {
		t.Fatalf("a directory without the jar: %v, want an error naming make java", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "streams-twin.jar"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FindStreamsApp(dir)
	if err != nil || got != dir {
		t.Fatalf("FindStreamsApp(%s) = %q, %v", dir, got, err)
	}
	t.Chdir(t.TempDir())
	if _, err := FindStreamsApp(""); err == nil || !strings.Contains(err.Error(), StreamsAppDir) {
		t.Fatalf("no app anywhere: %v, want an error naming %s", err, StreamsAppDir)
	}
}
