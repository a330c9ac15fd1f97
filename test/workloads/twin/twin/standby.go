package twin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// replicate is the standby: it applies the changelog to its state as the records come, until
// Takeover is closed; then it reads the changelog to the end offsets it finds (the source has
// stopped, so they are final) and returns with the state current, for the loop to take over.
func (t *Twin) replicate(ctx context.Context) error {
	if t.cfg.Takeover == nil {
		return errors.New("no takeover signal (Config.Takeover)")
	}
	t.standby.Store(true)
	rd, err := t.reader()
	if err != nil {
		return err
	}
	defer rd.Close()
	adm := kadm.NewClient(rd)
	parts := t.cfg.OutPartitions
	if parts <= 0 {
		parts = 3
		if td, err := adm.ListTopics(ctx, t.cfg.In); err == nil && td.Has(t.cfg.In) && len(td[t.cfg.In].Partitions) > 0 {
			parts = int32(len(td[t.cfg.In].Partitions))
		}
	}
	if err := t.ensureChangelog(ctx, rd, parts); err != nil {
		return err
	}
	starts, err := waitOffsets(ctx, adm.ListStartOffsets, t.cfg.Changelog)
	if err != nil {
		return fmt.Errorf("start offsets of %s: %w", t.cfg.Changelog, err)
	}
	next := map[int32]int64{} // partition -> next offset to read
	hwm := map[int32]int64{}
	assign := map[int32]kgo.Offset{}
	starts.Each(func(o kadm.ListedOffset) {
		next[o.Partition] = o.Offset
		assign[o.Partition] = kgo.NewOffset().At(o.Offset)
	})
	rd.AddConsumePartitions(map[string]map[int32]kgo.Offset{t.cfg.Changelog: assign})
	t.cfg.Logf("twin: standby: replicating %s (%d partitions)", t.cfg.Changelog, len(assign))

	poll := func(pctx context.Context) error {
		fs := rd.PollFetches(pctx)
		for _, fe := range fs.Errors() {
			if !errors.Is(fe.Err, context.Canceled) && !errors.Is(fe.Err, context.DeadlineExceeded) {
				return fmt.Errorf("fetch %s[%d]: %w", fe.Topic, fe.Partition, fe.Err)
			}
		}
		var applyErr error
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.HighWatermark > hwm[p.Partition] {
				hwm[p.Partition] = p.HighWatermark
			}
			for _, r := range p.Records {
				next[p.Partition] = r.Offset + 1
				if r.Attrs.IsControl() {
					continue
				}
				t.replicated.Add(int64(len(r.Key) + len(r.Value)))
				if err := t.state.ApplyChange(r.Key, r.Value); err != nil && applyErr == nil {
					applyErr = err
				}
			}
		})
		var lag int64
		for p, h := range hwm {
			lag += max(0, h-next[p])
		}
		t.lag.Store(lag)
		return applyErr
	}

	// Replicate until the takeover.
	pctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-t.cfg.Takeover:
		case <-ctx.Done():
		}
		cancel()
	}()
	for pctx.Err() == nil {
		if err := poll(pctx); err != nil {
			cancel()
			return err
		}
		if t.lag.Load() == 0 && t.replicated.Load() > 0 {
			// Caught up: hash what changed (the first time, everything), so that the digest
			// at the takeover costs only the tail.
			t.state.WarmDigest()
		}
	}
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// The tail: everything up to the end offsets now.
	start, before := time.Now(), t.replicated.Load()
	ends, err := waitOffsets(ctx, adm.ListEndOffsets, t.cfg.Changelog)
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", t.cfg.Changelog, err)
	}
	behind := func() bool {
		b := false
		ends.Each(func(o kadm.ListedOffset) {
			if next[o.Partition] < o.Offset {
				b = true
			}
		})
		return b
	}
	for behind() {
		if err := poll(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	t.state.Finish()
	t.ready = true
	t.takeoverMs.Store(time.Since(start).Milliseconds())
	t.takeoverBytes.Store(t.replicated.Load() - before)
	t.standby.Store(false)
	t.storeDigest()
	releaseGarbage()
	t.cfg.Logf("twin: standby: took over after reading the changelog's tail in %s (%d MiB replicated in all)",
		time.Since(start).Round(time.Millisecond), t.replicated.Load()>>20)
	return nil
}

// waitOffsets lists offsets of topic, waiting (up to 30 s) while the topic is still being
// created.
func waitOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topic string) (kadm.ListedOffsets, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		offs, err := list(ctx, topic)
		if err == nil {
			err = offs.Error()
		}
		if err == nil && len(offs[topic]) > 0 {
			return offs, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("topic %s: %v", topic, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
