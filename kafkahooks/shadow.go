package kafkahooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A replay migration (hook protocol 2) runs in four calls on a Loop:
//
//	source  Prepare   the boundary B0 (and the state's digest); the gate closes
//	        (CRIU dumps the source, leaving it running)
//	source  Release   the gate opens, fetching resumes: the same clients carry on
//	copy    Shadow    the copy, restored from the dump with its connections closed and its gate
//	                  still closed, drops its group client for good (its gate dies: it dials
//	                  nothing, ever) and replays its partitions from B0 with a consumer of its
//	                  own outside the group, applying records below the source's committed
//	                  offsets, producing nothing
//	source  Prepare   the boundary B, where the source holds
//	copy    Advance   the copy applies the records up to exactly B and answers its digest
//	copy    Resume    the takeover: a new producer fences the source, the group's committed
//	                  offsets (stable) are read and applied up to, the copy joins the group as
//	                  the static member and consumes from there
//
// The gate is what makes "before the copy can send anything to Kafka, it is told it is a
// shadow" hold: the copy's memory is the source's at the dump, and the source's client had
// stopped opening connections at the prepare.

// gate holds a client's dials: open, closed (dials wait) or dead (dials fail, for good).
type gate struct {
	mu    sync.Mutex
	state int // gateOpen, gateClosed, gateDead
	ch    chan struct{}
}

const (
	gateOpen = iota
	gateClosed
	gateDead
)

func newGate() *gate { return &gate{ch: closedChan()} }

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == gateOpen {
		g.state, g.ch = gateClosed, make(chan struct{})
	}
}

func (g *gate) open() { g.set(gateOpen) }
func (g *gate) kill() { g.set(gateDead) }

func (g *gate) set(state int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == gateDead {
		return
	}
	if g.state == gateClosed {
		close(g.ch)
	}
	g.state = state
	if state == gateOpen || state == gateDead {
		g.ch = closedChan()
	}
}

// errDropped is what a dead gate's dials fail with.
var errDropped = errors.New("kafkahooks: this Kafka client was dropped (the process is a shadow): it reaches no broker")

func (g *gate) dialer(d func(ctx context.Context, network, host string) (net.Conn, error)) func(ctx context.Context, network, host string) (net.Conn, error) {
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		for {
			g.mu.Lock()
			state, ch := g.state, g.ch
			g.mu.Unlock()
			switch state {
			case gateOpen:
				return d(ctx, network, host)
			case gateDead:
				return nil, errDropped
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, fmt.Errorf("kafkahooks: dial %s: held at the boundary: %w", host, ctx.Err())
			}
		}
	}
}

func removeAssigned(assigned, lost map[string][]int32) {
	for t, ps := range lost {
		keep := assigned[t][:0]
		for _, p := range assigned[t] {
			if !containsInt32(ps, p) {
				keep = append(keep, p)
			}
		}
		assigned[t] = keep
	}
}

func containsInt32(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// shadow is a Loop's replay: a consumer outside the group and what it fetched.
type shadow struct {
	cl          *kgo.Client
	adm         *kadm.Client
	parts       map[string][]int32
	pending     map[tp][]*kgo.Record // fetched, not yet applied: at or past the limit
	pos         Offsets              // the next offset to apply; absent until known
	limit       Offsets              // apply below this
	fixed       bool                 // limit set by an advance: no more refreshes
	refreshed   time.Time
	lastApplied time.Time // the timestamp of the last record applied
}

type tp struct {
	topic string
	part  int32
}

// refreshEvery is how often a shadow reads the source's committed offsets (its replay limit).
const refreshEvery = 100 * time.Millisecond

// release continues the source after a snapshot.
func (l *Loop) release() ctlResp {
	l.mu.Lock()
	st, b, cl, g := l.state, l.boundary, l.cl, l.gate
	l.mu.Unlock()
	switch st {
	case StateShadow:
		return ctlResp{err: fmt.Errorf("%w: a shadow is not released (its state is behind): resume it to take over, or remove it", ErrState)}
	case StateRunning:
		return ctlResp{offs: offsetsFromEpochs(cl.CommittedOffsets())}
	}
	g.open()
	cl.ResumeFetchTopics(l.cfg.Topics...)
	l.mu.Lock()
	l.state, l.boundary, l.resumed = StateRunning, nil, nil
	l.mu.Unlock()
	l.logf("kafkahooks: released at %v: carrying on with the same clients", b.Offsets)
	return ctlResp{offs: b.Offsets}
}

// becomeShadow turns a prepared (restored) copy into a shadow.
func (l *Loop) becomeShadow(ctx context.Context) ctlResp {
	l.mu.Lock()
	st, b, cl, g, assigned := l.state, l.boundary, l.cl, l.gate, l.assigned
	l.mu.Unlock()
	if st == StateShadow {
		l.mu.Lock()
		from := l.shadowView.Position
		l.mu.Unlock()
		return ctlResp{offs: from}
	}
	if st != StatePrepared {
		return ctlResp{err: fmt.Errorf("%w: only a copy restored at a boundary becomes a shadow (this one is %s)", ErrState, st)}
	}
	if l.cfg.Digest == nil {
		return ctlResp{err: fmt.Errorf("%w: the application has no state digest (LoopConfig.Digest): it cannot be verified after a replay", ErrNoReplay)}
	}
	// Not a word to the broker: the old client's connections were restored closed and its gate
	// is closed; now it dies, so that nothing of it (heartbeat, join, commit, transaction) can
	// ever reach a broker, and it is closed in the background.
	g.kill()
	go cl.Close()
	parts := map[string][]int32{}
	for t, ps := range assigned {
		parts[t] = append([]int32(nil), ps...)
	}
	for t, ps := range b.Offsets {
		for p := range ps {
			if !containsInt32(parts[t], p) {
				parts[t] = append(parts[t], p)
			}
		}
	}
	start := map[string]map[int32]kgo.Offset{}
	pos := Offsets{}
	for t, ps := range parts {
		start[t] = map[int32]kgo.Offset{}
		for _, p := range ps {
			if at, ok := b.Offsets.Lookup(t, p); ok {
				start[t][p] = kgo.NewOffset().At(at)
				pos.Set(t, p, at)
			} else {
				start[t][p] = kgo.NewOffset().AtStart() // never committed: the group starts there too
			}
		}
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(l.cfg.Brokers...),
		kgo.Dialer(l.cfg.Dialer),
		kgo.ConsumePartitions(start),
		kgo.FetchMaxWait(l.cfg.FetchMaxWait),
	}
	if l.cfg.TransactionalID != "" {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	rc, err := kgo.NewClient(append(opts, l.cfg.Opts...)...)
	if err != nil {
		return ctlResp{err: fmt.Errorf("kafkahooks: shadow: create the replay consumer: %w", err)}
	}
	sh := &shadow{cl: rc, adm: kadm.NewClient(rc), parts: parts, pending: map[tp][]*kgo.Record{}, pos: pos, limit: Offsets{}}
	l.mu.Lock()
	l.state, l.cl, l.gate, l.boundary, l.shadow = StateShadow, nil, nil, nil, sh
	l.shadowView = Status{Position: pos.Only(pos), Limit: Offsets{}}
	l.mu.Unlock()
	l.logf("kafkahooks: shadow: old client dropped; replaying %v from %v outside the group", parts, b.Offsets)
	return ctlResp{offs: b.Offsets}
}

// replayStep polls the replay consumer once (interruptible by control requests), refreshes
// the limit and applies what lies below it.
func (l *Loop) replayStep(ctx context.Context) error {
	sh := l.shadow
	if !sh.fixed && time.Since(sh.refreshed) >= refreshEvery {
		if err := l.refreshLimit(ctx, sh); err != nil && ctx.Err() == nil {
			l.logf("kafkahooks: shadow: read the source's committed offsets: %v", err)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, refreshEvery)
	l.mu.Lock()
	l.pollCancel = cancel
	l.mu.Unlock()
	fs := sh.cl.PollRecords(pctx, l.cfg.MaxPollRecords)
	l.mu.Lock()
	l.pollCancel = nil
	l.mu.Unlock()
	cancel()
	if err := l.fetchErrors(fs); err != nil {
		return err
	}
	sh.hold(fs.Records())
	return l.applyBelowLimit(ctx, sh)
}

func (sh *shadow) hold(recs []*kgo.Record) {
	for _, r := range recs {
		k := tp{r.Topic, r.Partition}
		sh.pending[k] = append(sh.pending[k], r)
	}
}

// refreshLimit reads the group's committed offsets: what the source has done.
func (l *Loop) refreshLimit(ctx context.Context, sh *shadow) error {
	sh.refreshed = time.Now()
	resp, err := sh.adm.FetchOffsets(ctx, l.cfg.Group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return err
	}
	committed := OffsetsFromKadm(resp)
	for t, ps := range sh.parts {
		for _, p := range ps {
			if at, ok := committed.Lookup(t, p); ok {
				sh.limit.Set(t, p, at)
			}
		}
	}
	l.publish(sh)
	return nil
}

// applyBelowLimit hands the held records below the limit to Handle, in batches, in order
// within each partition.
func (l *Loop) applyBelowLimit(ctx context.Context, sh *shadow) error {
	for {
		var batch []*kgo.Record
		keys := make([]tp, 0, len(sh.pending))
		for k := range sh.pending {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return keys[i].topic < keys[j].topic || keys[i].topic == keys[j].topic && keys[i].part < keys[j].part
		})
		for _, k := range keys {
			lim, ok := sh.limit.Lookup(k.topic, k.part)
			if !ok {
				continue
			}
			recs := sh.pending[k]
			n := 0
			for n < len(recs) && recs[n].Offset < lim && len(batch) < l.cfg.MaxPollRecords {
				n++
			}
			batch = append(batch, recs[:n]...)
			sh.pending[k] = recs[n:]
		}
		if len(batch) == 0 {
			l.publish(sh)
			return nil
		}
		b := &Batch{Records: batch, ctx: ctx}
		if err := l.cfg.Handle(ctx, b); err != nil {
			return fmt.Errorf("kafkahooks: shadow: handle a replayed batch: %w", err)
		}
		for _, r := range batch {
			sh.pos.Set(r.Topic, r.Partition, r.Offset+1)
			sh.lastApplied = r.Timestamp
		}
		l.replayed.Add(int64(len(batch)))
	}
}

// publish updates the shadow's fields of Status.
func (l *Loop) publish(sh *shadow) {
	v := Status{Position: Offsets{}, Limit: Offsets{}, Replayed: l.replayed.Load()}
	var newest time.Time
	for t, ps := range sh.limit {
		for p, lim := range ps {
			v.Limit.Set(t, p, lim)
			at, ok := sh.pos.Lookup(t, p)
			if !ok {
				continue
			}
			v.Lag += max(0, lim-at)
			for _, r := range sh.pending[tp{t, p}] {
				if r.Offset >= lim {
					break
				}
				if r.Timestamp.After(newest) {
					newest = r.Timestamp
				}
			}
		}
	}
	for t, ps := range sh.pos {
		for p, at := range ps {
			v.Position.Set(t, p, at)
		}
	}
	if !newest.IsZero() && !sh.lastApplied.IsZero() && newest.After(sh.lastApplied) {
		v.LagTime = newest.Sub(sh.lastApplied)
	}
	l.mu.Lock()
	l.shadowView = v
	l.mu.Unlock()
}

// advance has the shadow apply exactly up to to and answers its digest there.
func (l *Loop) advance(ctx context.Context, to Offsets) ctlResp {
	l.mu.Lock()
	st, sh := l.state, l.shadow
	l.mu.Unlock()
	if st != StateShadow {
		return ctlResp{err: fmt.Errorf("%w: advance is for a shadow (this copy is %s)", ErrState, st)}
	}
	for t, ps := range to {
		for p := range ps {
			if !containsInt32(sh.parts[t], p) {
				return ctlResp{err: fmt.Errorf("%w: advance to %v: the shadow does not replay %s[%d] (it has %v)", ErrState, to, t, p, sh.parts)}
			}
		}
	}
	if err := l.applyUpTo(ctx, sh, to); err != nil {
		return ctlResp{err: err}
	}
	a := Advanced{Protocol: Version, Offsets: sh.pos.Only(to), Digest: l.cfg.Digest()}
	l.logf("kafkahooks: shadow: advanced to %v (digest %s)", to, a.Digest)
	return ctlResp{adv: a}
}

// applyUpTo fixes the limit at to and polls until every partition of to is there.
func (l *Loop) applyUpTo(ctx context.Context, sh *shadow, to Offsets) error {
	for t, ps := range to {
		for p, at := range ps {
			if cur, ok := sh.pos.Lookup(t, p); ok && cur > at {
				return fmt.Errorf("%w: the shadow applied %s[%d] up to %d, past %d", ErrState, t, p, cur, at)
			}
			sh.limit.Set(t, p, at)
		}
	}
	sh.fixed = true
	for {
		if err := l.applyBelowLimit(ctx, sh); err != nil {
			return err
		}
		if sh.pos.Only(to).Equal(to) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("kafkahooks: shadow: apply up to %v (at %v): %w", to, sh.pos.Only(to), err)
		}
		fs := sh.cl.PollRecords(ctx, l.cfg.MaxPollRecords)
		if err := l.fetchErrors(fs); err != nil {
			return err
		}
		sh.hold(fs.Records())
	}
}

// takeover is a shadow's resume: fence the source with a new producer, read the group's
// committed offsets once they are stable (the source can no longer move them), apply up to
// them, join the group.
func (l *Loop) takeover(ctx context.Context) (Offsets, error) {
	sh := l.shadow
	var committed Offsets
	offs, err := l.reinit(ctx, func(ctx context.Context, cl *kgo.Client) error {
		var err error
		if committed, err = l.stableCommitted(ctx, kadm.NewClient(cl), sh); err != nil {
			return fmt.Errorf("kafkahooks: takeover: %w", err)
		}
		if err := l.applyUpTo(ctx, sh, committed); err != nil {
			return fmt.Errorf("kafkahooks: takeover: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sh.cl.Close()
	l.mu.Lock()
	l.shadow = nil
	l.mu.Unlock()
	if !offs.Equal(committed) {
		l.logf("kafkahooks: WARNING: took over at %v, but fetching resumed at %v", committed, offs)
	}
	l.logf("kafkahooks: shadow took over at %v after replaying %d records", committed, l.replayed.Load())
	return offs, nil
}

// stableCommitted waits until the group's committed offsets are stable and returns those of
// the shadow's partitions.
func (l *Loop) stableCommitted(ctx context.Context, adm *kadm.Client, sh *shadow) (Offsets, error) {
	all, err := l.fetchStable(ctx, adm)
	if err != nil {
		return nil, err
	}
	out := Offsets{}
	for t, ps := range sh.parts {
		for _, p := range ps {
			if at, ok := all.Lookup(t, p); ok {
				out.Set(t, p, at)
			}
		}
	}
	return out, nil
}

// Release implements Replayer.
func (l *Loop) Release(ctx context.Context) (Offsets, error) {
	r := l.do(ctx, "release")
	return r.offs, r.err
}

// Shadow implements Replayer.
func (l *Loop) Shadow(ctx context.Context) (Offsets, error) {
	r := l.do(ctx, "shadow")
	return r.offs, r.err
}

// Advance implements Replayer.
func (l *Loop) Advance(ctx context.Context, to Offsets) (Advanced, error) {
	r := l.doReq(&ctlReq{op: "advance", ctx: ctx, to: to})
	return r.adv, r.err
}
