package twin_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/twin/twin"
)

// TestRebuildDigest: a twin that rebuilds its state from the changelog, and a standby that
// takes over, hold the same state as the source at the boundary where it stopped (equal
// digests). In process on kfake; no root needed.
func TestRebuildDigest(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	logs := &logger{start: time.Now()}
	defer func() {
		if t.Failed() {
			logs.dump(t)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const in, out, group, instanceID = "sensors-dg", "twin-state-dg", "ftwin-twin-dg", "twin-dg"
	adm, stopGen, genDone := setup(ctx, t, brokers, in)
	takeover := make(chan struct{})
	cfg := func(instance string) twin.Config {
		return twin.Config{Group: group, InstanceID: instanceID, In: in, Out: out, StateMiB: 16, Devices: 64,
			Window: 20, Transactional: true, RebuildFromChangelog: true, Changelog: "twin-changelog-dg",
			Digest: true, Instance: instance}
	}
	a := startTwin(t, brokers, cfg("A"), logs)
	waitFor(t, "A to process 300 records", 60*time.Second, func() bool { return a.tw.Stats().Processed >= 300 }, a)
	sc := cfg("S")
	sc.Standby, sc.Takeover = true, takeover
	s := startTwin(t, brokers, sc, logs)
	waitFor(t, "S to replicate the bootstrap", 60*time.Second, func() bool { return s.tw.Stats().ReplicatedBytes >= 16<<20 }, s)

	// The move: stop A (it commits its batch), S takes over from the changelog's tail.
	a.stop()
	<-a.done
	if a.err != nil {
		t.Fatalf("A: %v", a.err)
	}
	srcDigest := a.tw.Stats().Digest
	close(takeover)
	waitFor(t, "S to take over", 60*time.Second, func() bool { return s.tw.Stats().Digest != "" }, s)
	if got := s.tw.Stats().Digest; got != srcDigest {
		t.Fatalf("standby took over with digest %s, source stopped at %s", got, srcDigest)
	}
	waitFor(t, "S to process", 60*time.Second, func() bool { return s.tw.Stats().Processed > 100 }, s)

	// Then a restart: S stops, B rebuilds from the changelog.
	s.stop()
	<-s.done
	if s.err != nil {
		t.Fatalf("S: %v", s.err)
	}
	srcDigest = s.tw.Stats().Digest
	b := startTwin(t, brokers, cfg("B"), logs)
	waitFor(t, "B to rebuild", 60*time.Second, func() bool { return b.tw.Stats().Digest != "" }, b)
	st := b.tw.Stats()
	if st.Digest != srcDigest {
		t.Fatalf("rebuilt digest %s, source stopped at %s", st.Digest, srcDigest)
	}
	if st.RebuiltBytes < 16<<20 {
		t.Fatalf("rebuilt from %d bytes of changelog, less than the 16 MiB state", st.RebuiltBytes)
	}
	t.Logf("rebuilt %d records (%d MiB) in %d ms", st.RebuiltRecords, st.RebuiltBytes>>20, st.RebuildMs)
	res := drain(ctx, t, adm, stopGen, genDone, in, group, b)
	checkOutput(ctx, t, brokers, out, res)
}
