package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	line1 = `{"tick":1,"mem_mib":16,"checksum":"00000000000000aa","mem_ok":true,"pid":1,"start_ns":100,"now_ns":200}`
	line2 = `{"tick":2,"mem_mib":16,"checksum":"00000000000000bb","mem_ok":false,"pid":1,"start_ns":100,"now_ns":400}`
)

func TestParseLines(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		ticks []uint64
	}{
		{"empty", "", nil},
		{"two lines", line1 + "\n" + line2 + "\n", []uint64{1, 2}},
		{"partial last line", line1 + "\n" + line2[:20], []uint64{1}},
		{"complete last line without newline is partial", line1 + "\n" + line2, []uint64{1}},
		{"other output skipped", "counter: listening on :8080\n\n" + line1 + "\r\n" + "panic: x\n" + line2 + "\n", []uint64{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			states, err := ParseLines(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(states) != len(tc.ticks) {
				t.Fatalf("got %d states %+v, want ticks %v", len(states), states, tc.ticks)
			}
			for i, s := range states {
				if s.Tick != tc.ticks[i] {
					t.Fatalf("state %d has tick %d, want %d", i, s.Tick, tc.ticks[i])
				}
			}
		})
	}
}

func TestParseLinesFields(t *testing.T) {
	states, err := ParseLines(strings.NewReader(line2 + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := State{Tick: 2, MemMiB: 16, Checksum: "00000000000000bb", MemOK: false, PID: 1, StartNS: 100, NowNS: 400}
	if len(states) != 1 || states[0] != want {
		t.Fatalf("got %+v, want %+v", states, want)
	}
}

func TestParseLinesMalformed(t *testing.T) {
	states, err := ParseLines(strings.NewReader(line1 + "\n" + `{"tick":"two"}` + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("got error %v, want one naming line 2", err)
	}
	if len(states) != 1 {
		t.Fatalf("got %d states before the bad line, want 1", len(states))
	}
}

func TestLast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("starting\n"+line1[:10]), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Last(path); !errors.Is(err, ErrNoState) {
		t.Fatalf("got error %v, want ErrNoState", err)
	}
	if err := os.WriteFile(path, []byte(line1+"\n"+line2+"\n"+line1[:10]), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Last(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Tick != 2 || s.Checksum != "00000000000000bb" {
		t.Fatalf("got %+v, want tick 2", s)
	}
	if _, err := Last(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("no error for a missing file")
	}
}
