package kafkahooks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestLoopAtLeastOnce runs a Loop without transactions against kfake: prepare commits the
// boundary, resume and abort continue from it, and every input reaches the output.
func TestLoopAtLeastOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	adm := kadm.NewClient(prod)
	n := 0
	produce := func(k int) {
		t.Helper()
		for range k {
			n++
			if err := prod.ProduceSync(ctx, kgo.StringRecord(strconv.Itoa(n))).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}

	loop, err := NewLoop(LoopConfig{
		Brokers: brokers, Group: "g", Topics: []string{"in"}, InstanceID: "i-1",
		Handle: func(_ context.Context, b *Batch) error {
			for _, r := range b.Records {
				b.Produce(&kgo.Record{Topic: "out", Value: r.Value})
			}
			return nil
		},
		Logf: func(f string, a ...any) { t.Logf(time.Now().Format("15:04:05.000 ")+f, a...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loop.Prepare(ctx); err == nil {
		t.Fatal("prepare before Run succeeded")
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- loop.Run(runCtx) }()

	processed := func(want int64) {
		t.Helper()
		t0 := time.Now()
		defer func() { t.Logf("processed(%d) took %s", want, time.Since(t0)) }()
		deadline := time.Now().Add(20 * time.Second)
		for loop.Stats().Processed < want {
			if time.Now().After(deadline) {
				t.Fatalf("processed %d, want %d", loop.Stats().Processed, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	commits := func() Offsets {
		t.Helper()
		resp, err := adm.FetchOffsets(ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		offs := Offsets{}
		resp.Each(func(o kadm.OffsetResponse) {
			if offs[o.Topic] == nil {
				offs[o.Topic] = map[int32]int64{}
			}
			offs[o.Topic][o.Partition] = o.At
		})
		return offs
	}

	produce(50)
	processed(50)
	b, err := loop.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Transactional || b.RecordsProcessed != 50 || b.MemberID == "" || fmt.Sprint(commits()) != fmt.Sprint(b.Offsets) {
		t.Fatalf("boundary %+v, committed %v", b, commits())
	}
	produce(20) // arrives while prepared: not processed
	time.Sleep(300 * time.Millisecond)
	if got := loop.Stats().Processed; got != 50 {
		t.Fatalf("processed %d while prepared", got)
	}
	if loop.Status().State != StatePrepared {
		t.Fatal("not prepared")
	}
	offs, err := loop.Resume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(offs) != fmt.Sprint(b.Offsets) {
		t.Fatalf("resumed from %v, boundary %v", offs, b.Offsets)
	}
	again, err := loop.Resume(ctx) // a retried resume answers the same
	if err != nil || fmt.Sprint(again) != fmt.Sprint(offs) {
		t.Fatalf("retried resume: %v, %v", again, err)
	}
	processed(70)

	if _, err := loop.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := loop.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := loop.Resume(ctx); !errors.Is(err, ErrNotPrepared) {
		t.Fatalf("resume after abort: %v, want ErrNotPrepared", err)
	}
	produce(30)
	processed(100)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := loop.Run(ctx); err == nil {
		t.Fatal("second Run succeeded")
	}
	if _, err := loop.Prepare(ctx); err == nil {
		t.Fatal("prepare after Run returned succeeded")
	}

	ends, err := adm.ListEndOffsets(ctx, "out")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 100 {
		t.Fatalf("%d outputs for 100 inputs", total)
	}
	st := loop.Stats()
	t.Logf("stats %+v", st)
	if st.Reinits != 2 {
		t.Errorf("%d re-initialisations, want 2 (resume, abort)", st.Reinits)
	}
}
