package main

import (
	"testing"

	"github.com/ftwin-migrate/ftwin-migrate/bench"
)

func TestParseSkip(t *testing.T) {
	got, err := parseSkip("kafka-restart:16")
	if err != nil || got != (bench.Skip{Method: "kafka-restart", StateMiB: 16}) {
		t.Fatalf("parseSkip: %+v, %v", got, err)
	}
	for _, bad := range []string{"kafka-restart", "kafka-restart:", "kafka-restart:x", "nope:16", ":16", "kafka-restart:0"} {
		if _, err := parseSkip(bad); err == nil {
			t.Errorf("parseSkip(%q) took it", bad)
		}
	}
}
