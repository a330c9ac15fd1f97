package kafkahooks

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestZZLatency(t *testing.T) {
	c, _ := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in"))
	defer c.Close()
	ctx := context.Background()
	prod, _ := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("in"))
	defer prod.Close()
	for i := 0; i < 5; i++ {
		prod.ProduceSync(ctx, kgo.StringRecord("x"))
	}
	for round := 0; round < 4; round++ {
		cl, _ := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("in"), kgo.DisableAutoCommit())
		// drain existing
		n := 0
		for n < 5*(round+1) {
			fs := cl.PollFetches(ctx)
			n += len(fs.Records())
			cl.CommitUncommittedOffsets(ctx)
			if round > 0 { break }
		}
		time.Sleep(time.Duration(round) * 100 * time.Millisecond)
		start := time.Now()
		for i := 0; i < 5; i++ {
			prod.ProduceSync(ctx, kgo.StringRecord("x"))
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got := 0
		for got < 5 && pctx.Err() == nil {
			fs := cl.PollFetches(pctx)
			got += len(fs.Records())
		}
		cancel()
		t.Logf("round %d: %d records %s after produce", round, got, time.Since(start))
		cl.CommitUncommittedOffsets(ctx)
		cl.Close()
	}
}
