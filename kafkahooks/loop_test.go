package kafkahooks

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestLoopAtLeastOnce runs a Loop without transactions against kfake: prepare commits the
// boundary, resume and abort continue from it, and every input reaches the output.
func TestLoopAtLeastOnce(t *testing.T) { testLoop(t, "") }

// TestLoopTransactional is the same with transactions: prepare waits for the last one to be
// complete and the offsets to be stable, and every input reaches the output exactly once.
func TestLoopTransactional(t *testing.T) { testLoop(t, "txn-1") }

func testLoop(t *testing.T, txnID string) {
	_, brokers, prod := inOutCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
		Brokers: brokers, Group: "g", Topics: []string{"in"}, InstanceID: "i-1", TransactionalID: txnID,
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
		return OffsetsFromKadm(resp)
	}

	produce(50)
	processed(50)
	b, err := loop.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Transactional != (txnID != "") || b.RecordsProcessed != 50 || b.MemberID == "" || !commits().Equal(b.Offsets) {
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
	if !offs.Equal(b.Offsets) {
		t.Fatalf("resumed from %v, boundary %v", offs, b.Offsets)
	}
	again, err := loop.Resume(ctx) // a retried resume answers the same (versions 1 and 2)
	if err != nil || !again.Equal(offs) {
		t.Fatalf("retried resume: %v, %v", again, err)
	}
	if _, err := loop.Resume(context.WithValue(ctx, spokenKey{}, 3)); !errors.Is(err, ErrState) {
		t.Fatalf("a retried resume of version 3: %v, want ErrState (409, never a remembered answer)", err)
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

	if got := countOutputs(ctx, t, brokers, "out"); got != 100 {
		t.Fatalf("%d outputs for 100 inputs", got)
	}
	st := loop.Stats()
	t.Logf("stats %+v", st)
	if st.Reinits != 2 {
		t.Errorf("%d re-initialisations, want 2 (resume, abort)", st.Reinits)
	}
}

// countOutputs reads topic from the start (committed records only) and returns how many
// records it holds, once no more arrive for a while.
func countOutputs(ctx context.Context, t *testing.T, brokers []string, topic string) int {
	t.Helper()
	return len(readValues(ctx, t, brokers, topic))
}

// inOutCluster starts a one-broker kfake with topics "in" and "out" of partitions partitions
// each and a client producing to "in"; both close when the test ends.
func inOutCluster(t *testing.T, partitions int) (*kfake.Cluster, []string, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return c, brokers, prod
}

// TestLoopProduceRefused: a transactional loop whose output the broker refuses for a reason
// other than a fence (OUT_OF_ORDER_SEQUENCE_NUMBER, as kfake once answered right after a
// commit in CI) aborts the batch and processes it again instead of stopping: every input
// reaches the output exactly once. A refusal that keeps coming back stops the loop.
func TestLoopProduceRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refuse  int // the loop's produce requests refused
		wantErr bool
	}{{"once", 1, false}, {"always", 1000, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c, brokers, prod := inOutCluster(t, 1)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var refused atomic.Int64
			c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				req := kreq.(*kmsg.ProduceRequest)
				if req.TransactionID == nil || refused.Load() >= int64(tc.refuse) { // only the loop produces in transactions (to "out"; Produce v13 names topics by id)
					return nil, nil, false
				}
				c.KeepControl()
				refused.Add(1)
				resp := req.ResponseKind().(*kmsg.ProduceResponse)
				for _, rt := range req.Topics {
					st := kmsg.NewProduceResponseTopic()
					st.Topic, st.TopicID = rt.Topic, rt.TopicID
					for _, rp := range rt.Partitions {
						sp := kmsg.NewProduceResponseTopicPartition()
						sp.Partition, sp.ErrorCode = rp.Partition, kerr.OutOfOrderSequenceNumber.Code
						st.Partitions = append(st.Partitions, sp)
					}
					resp.Topics = append(resp.Topics, st)
				}
				return resp, nil, true
			})
			var aborted atomic.Int64
			loop, err := NewLoop(LoopConfig{
				Brokers: brokers, Group: "g", Topics: []string{"in"}, InstanceID: "i-1", TransactionalID: "txn-1",
				Handle: func(_ context.Context, b *Batch) error {
					for _, r := range b.Records {
						b.Produce(&kgo.Record{Topic: "out", Value: r.Value})
					}
					return nil
				},
				OnAborted: func() { aborted.Add(1) },
				Logf:      func(f string, a ...any) { t.Logf(time.Now().Format("15:04:05.000 ")+f, a...) },
			})
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			done := make(chan error, 1)
			go func() { done <- loop.Run(runCtx) }()
			for i := 1; i <= 20; i++ {
				if err := prod.ProduceSync(ctx, kgo.StringRecord(strconv.Itoa(i))).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			if tc.wantErr {
				select {
				case err := <-done:
					if err == nil || !errors.Is(err, kerr.OutOfOrderSequenceNumber) {
						t.Fatalf("Run ended with %v, want the refusal", err)
					}
					if n := aborted.Load(); n != maxProduceAborts {
						t.Fatalf("%d batches aborted before giving up, want %d", n, maxProduceAborts)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("the loop did not give up on a refusal that keeps coming back")
				}
				return
			}
			deadline := time.Now().Add(20 * time.Second)
			for loop.Stats().Processed < 20 {
				if time.Now().After(deadline) {
					t.Fatalf("processed %d of 20 (stats %+v)", loop.Stats().Processed, loop.Stats())
				}
				time.Sleep(10 * time.Millisecond)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if refused.Load() != 1 || aborted.Load() != 1 || loop.Stats().Aborts != 1 {
				t.Fatalf("refused %d, OnAborted %d, stats %+v: want one refusal and one abort", refused.Load(), aborted.Load(), loop.Stats())
			}
			seen := map[string]int{}
			for _, v := range readValues(ctx, t, brokers, "out") {
				seen[v]++
			}
			for i := 1; i <= 20; i++ {
				if n := seen[strconv.Itoa(i)]; n != 1 {
					t.Errorf("input %d came out %d times", i, n)
				}
			}
			if len(seen) != 20 {
				t.Errorf("outputs %v: want 1..20", seen)
			}
		})
	}
}

// readValues reads topic from the start (committed records only) and returns its values, once
// no more arrive for a while.
func readValues(ctx context.Context, t *testing.T, brokers []string, topic string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var vs []string
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if pctx.Err() != nil && fs.NumRecords() == 0 {
			return vs
		}
		if err := fs.Err0(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) { vs = append(vs, string(r.Value)) })
	}
}
