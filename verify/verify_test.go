package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// stream makes outputs for device dev with the given seqs, processed 10ms apart from t0.
func stream(dev, inst string, t0 int64, seqs ...int64) []Event {
	var out []Event
	for i, s := range seqs {
		out = append(out, Event{Device: dev, Seq: s, Instance: inst, ProcessedNS: t0 + int64(i)*int64(10*time.Millisecond)})
	}
	return out
}

func TestAnalyzeClean(t *testing.T) {
	outs := append(stream("d-0", "a", 0, 1, 2, 3), stream("d-1", "b", 5, 1, 2)...)
	r := Analyze(outs, map[string]int64{"d-0": 3, "d-1": 2})
	if !r.OK() || r.EventsOut != 5 || r.Expected != 5 {
		t.Fatalf("clean stream: %+v", r)
	}
	if !reflect.DeepEqual(r.Instances, map[string]int64{"a": 3, "b": 2}) {
		t.Errorf("instances %v", r.Instances)
	}
	if r.StreamGap != 10*time.Millisecond-5 {
		t.Errorf("stream gap %v, want 10ms-5ns", r.StreamGap)
	}
}

func TestAnalyzeGap(t *testing.T) {
	// Seqs 3 and 4 lost, and the output paused for 2 s between seq 2 and 5.
	outs := stream("d-0", "src", 0, 1, 2)
	outs = append(outs, stream("d-0", "dst", int64(2*time.Second)+outs[1].ProcessedNS, 5, 6)...)
	r := Analyze(outs, map[string]int64{"d-0": 7, "d-9": 2})
	if r.Lost != 5 || r.Duplicated != 0 || r.OutOfOrder != 0 {
		t.Fatalf("lost %d dup %d ooo %d, want 5 0 0", r.Lost, r.Duplicated, r.OutOfOrder)
	}
	if got := r.Devices["d-0"].LostSeqs; !reflect.DeepEqual(got, []int64{3, 4, 7}) {
		t.Errorf("d-0 lost seqs %v, want [3 4 7]", got)
	}
	if got := r.Devices["d-9"]; got.Lost != 2 || got.Events != 0 {
		t.Errorf("d-9 (never output) %+v", got)
	}
	if r.StreamGap != 2*time.Second || r.StreamGapAfterNS != outs[1].ProcessedNS {
		t.Errorf("stream gap %v after %d, want 2s after %d", r.StreamGap, r.StreamGapAfterNS, outs[1].ProcessedNS)
	}
	if r.OK() {
		t.Error("OK with losses")
	}
}

func TestAnalyzeDuplicateAndReorder(t *testing.T) {
	// 3 twice (a zombie's output and the new copy's), then 5 before 4.
	outs := stream("d-0", "x", 0, 1, 2, 3, 3, 5, 4, 6)
	r := Analyze(outs, nil)
	if r.Duplicated != 1 || r.OutOfOrder != 1 || r.Lost != 0 || r.Expected != 6 {
		t.Fatalf("dup %d ooo %d lost %d expected %d, want 1 1 0 6", r.Duplicated, r.OutOfOrder, r.Lost, r.Expected)
	}
	if w := r.Worst(5); len(w) != 1 {
		t.Errorf("worst %v", w)
	}
	// A duplicate of an older seq is a duplicate, not a reorder.
	r = Analyze(stream("d-0", "x", 0, 1, 2, 3, 1), nil)
	if r.Duplicated != 1 || r.OutOfOrder != 0 {
		t.Errorf("late duplicate: dup %d ooo %d, want 1 0", r.Duplicated, r.OutOfOrder)
	}
}

func TestAnalyzeUnexpected(t *testing.T) {
	r := Analyze(append(stream("d-0", "x", 0, 1, 2, 3), stream("d-7", "x", 0, 1)...), map[string]int64{"d-0": 2})
	if r.Unexpected != 2 || r.Lost != 0 {
		t.Fatalf("unexpected %d lost %d, want 2 0", r.Unexpected, r.Lost)
	}
}

// TestOutputKfake reads a topic with a committed and an aborted transaction, so the last
// offsets of the partitions are transaction markers, and infers the expectation from an input.
func TestOutputKfake(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	in, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for s := 1; s <= 4; s++ {
		for _, d := range []string{"d-0", "d-1"} {
			v, _ := json.Marshal(map[string]any{"device": d, "seq": s})
			if err := in.ProduceSync(ctx, &kgo.Record{Key: []byte(d), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}

	tx, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("out"), kgo.TransactionalID("verify-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	txn := func(commit kgo.TransactionEndTry, evs ...Event) {
		t.Helper()
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			v, _ := json.Marshal(e)
			if err := tx.ProduceSync(ctx, &kgo.Record{Key: []byte(e.Device), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixNano()
	txn(kgo.TryCommit, append(stream("d-0", "a", now, 1, 2, 3), stream("d-1", "a", now, 1, 2, 3, 4)...)...)
	txn(kgo.TryAbort, stream("d-0", "zombie", now, 4)...) // aborted: never seen, so d-0's 4 is lost

	r, err := Output(ctx, brokers, "out", InputTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	if r.EventsOut != 7 || r.Lost != 1 || r.Duplicated != 0 || r.Instances["zombie"] != 0 || r.Expected != 8 {
		b, _ := json.MarshalIndent(r, "", "  ")
		t.Fatalf("report %s\nwant 7 events, 1 lost (d-0 seq 4, aborted), no zombie output", b)
	}
	if got := r.Devices["d-0"].LostSeqs; fmt.Sprint(got) != "[4]" {
		t.Errorf("d-0 lost %v", got)
	}
}
