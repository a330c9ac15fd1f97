package sensors

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRun produces for a short while into kfake and reads it all back: the topic has the
// partitions asked for, and every device's seqs run 1, 2, 3... in its partition.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("uses an in-process broker")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{Brokers: c.ListenAddrs(), Topic: "s", Partitions: 4, Devices: 7, Rate: 1000, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if res.Produced < 400 || res.Produced > int64(1000*took.Seconds())+10 || len(res.MaxSeq) != 7 {
		t.Fatalf("produced %d in %s for 1000/s, max seqs %v", res.Produced, took, res.MaxSeq)
	}
	var sum int64
	for _, m := range res.MaxSeq {
		sum += m
	}
	if sum != res.Produced {
		t.Fatalf("max seqs sum to %d, produced %d", sum, res.Produced)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("s"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(ctx, "s")
	if err != nil || len(td["s"].Partitions) != 4 {
		t.Fatalf("topic s: %+v, %v; want 4 partitions", td["s"], err)
	}
	last := map[string]int64{}
	part := map[string]int32{}
	var n int64
	for n < res.Produced {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			var ev Event
			if err := json.Unmarshal(r.Value, &ev); err != nil || ev.Device != string(r.Key) {
				t.Fatalf("record %s=%s: %v", r.Key, r.Value, err)
			}
			if p, ok := part[ev.Device]; ok && p != r.Partition {
				t.Fatalf("%s in partitions %d and %d", ev.Device, p, r.Partition)
			}
			part[ev.Device] = r.Partition
			if ev.Seq != last[ev.Device]+1 {
				t.Fatalf("%s: seq %d after %d", ev.Device, ev.Seq, last[ev.Device])
			}
			last[ev.Device] = ev.Seq
		})
	}
}
