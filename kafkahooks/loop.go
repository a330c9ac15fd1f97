package kafkahooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ftwin-migrate/ftwin-migrate/internal/wait"
)

// LoopConfig describes a consume-process-produce loop (see NewLoop).
type LoopConfig struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string
	// Group is the consumer group. Required.
	Group string
	// Topics are consumed. Required.
	Topics []string
	// InstanceID is the static member id (group.instance.id), so the group does not rebalance
	// while the application is frozen or moving, as long as it is back within SessionTimeout.
	// Empty means a dynamic member, which is not recommended for migration.
	InstanceID string
	// TransactionalID turns on exactly-once processing: every batch is one transaction holding
	// its output and its consumed offsets (kgo.GroupTransactSession), and fetches are
	// read_committed. Empty means at-least-once: outputs are flushed, then offsets committed.
	TransactionalID string
	// SessionTimeout is the group session timeout. Default 45s (Kafka's default). It applies
	// to the classic protocol only: a KIP-848 group's session timeout is the broker's
	// (group.consumer.session.timeout.ms, default 45s).
	SessionTimeout time.Duration
	// GroupProtocol is the consumer-group protocol: GroupProtocolClassic (the default:
	// JoinGroup/SyncGroup, assignment by the client) or GroupProtocolConsumer (KIP-848:
	// ConsumerGroupHeartbeat, assignment by the broker's "uniform" assignor; franz-go's
	// kgo.ServerSideBalancer with its cooperative-sticky balancer, Kafka 4.0+). franz-go falls
	// back to the classic protocol, silently, when a broker lacks ConsumerGroupHeartbeat v1.
	// Under KIP-848 a static member (InstanceID) is replaced only after it left with member
	// epoch -2 or its session expired; franz-go v1.22.3's Close sends that leave without the
	// instance id, which Apache Kafka refuses. The loop sends it itself when it replaces its
	// client (resume, abort: see leaveStatic), not when Run ends: a process restarted with
	// the same InstanceID after Run ended waits for the broker's session timeout.
	GroupProtocol string
	// TransactionTimeout is the producer's transaction.timeout.ms. Default: kgo's (40s).
	TransactionTimeout time.Duration
	// MaxPollRecords bounds a batch, and so a transaction. Default 500.
	MaxPollRecords int
	// EndTimeout bounds committing a batch. Default 30s.
	EndTimeout time.Duration
	// FetchMaxWait is how long a fetch waits for data at the broker. Default 500ms, not kgo's
	// 5s: kgo sends one fetch at a time per broker, and after a re-initialisation the first
	// one can leave with only the partitions ready first (those without a committed offset,
	// say) and hold the others back for this long.
	FetchMaxWait time.Duration
	// Dialer opens connections to brokers. Default: TCP without MPTCP (CRIU cannot dump MPTCP).
	Dialer func(ctx context.Context, network, host string) (net.Conn, error)
	// Opts are added to the client's options (logging, fetch tuning). They must not set the
	// group, topics, instance id, transactional id or isolation level.
	Opts []kgo.Opt
	// Handle processes one batch: read b.Records, produce outputs with b.Produce. An error
	// aborts the batch (its transaction) and stops the loop. An output the broker refuses
	// stops it too, unless the loop is transactional and the refusal is not a fence: then the
	// batch is aborted and delivered again (OnAborted).
	Handle func(ctx context.Context, b *Batch) error
	// BeforeConsume runs once at start, after the transactional producer is initialised (any
	// previous instance with the same TransactionalID is fenced and its open transaction
	// aborted) and before the group is joined: rebuild state here. Optional.
	BeforeConsume func(ctx context.Context, cl *kgo.Client) error
	// OnAborted is called (in the loop goroutine) after a batch was aborted — by a rebalance,
	// or because the broker refused one of its outputs for a reason other than a fence (at
	// most 5 batches in a row; then Run returns the error) — and its records will be delivered
	// again. Optional.
	OnAborted func()
	// Digest returns a digest of the application's state (hex, any length), called in the
	// loop goroutine between batches: at every prepare (Boundary.Digest) and at the end of an
	// advance. Setting it declares the application replayable (CapReplay, hook protocol 2):
	// its state is a deterministic function of the records Handle processed, in order within
	// each partition, whatever their interleaving across partitions (keep state per key, as a
	// Kafka Streams store does), and Handle reaches the outside only through Batch.Produce
	// (which a shadow's batches drop). It should cost little (an incremental digest): it runs
	// within the cutover's pause. Optional.
	Digest func() string
	// Logf logs what the loop does. Optional.
	Logf func(format string, args ...any)
}

// The consumer-group protocols of LoopConfig.GroupProtocol, as Kafka's group.protocol names them.
const (
	GroupProtocolClassic  = "classic"
	GroupProtocolConsumer = "consumer"
)

// Batch is what Handle processes: the records of one poll.
type Batch struct {
	Records []*kgo.Record

	cl  *kgo.Client // nil in a shadow's replay: Produce drops the record
	ctx context.Context
	mu  sync.Mutex
	err error
}

// Replay reports whether the batch is a shadow's replay (hook protocol 2): the state is to be
// updated as usual, and nothing is to reach the outside; Produce drops its records.
func (b *Batch) Replay() bool { return b.cl == nil }

// Produce sends r as part of the batch (in its transaction when transactional). It does not
// wait; the batch commits only if every record produced is acknowledged. In a replay it does
// nothing.
func (b *Batch) Produce(r *kgo.Record) {
	if b.cl == nil {
		return
	}
	b.cl.Produce(b.ctx, r, func(_ *kgo.Record, err error) {
		if err != nil {
			b.mu.Lock()
			if b.err == nil {
				b.err = err
			}
			b.mu.Unlock()
		}
	})
}

func (b *Batch) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// LoopStats count what a Loop did.
type LoopStats struct {
	// Processed counts records in committed batches.
	Processed int64
	// Commits counts committed batches (transactions when transactional).
	Commits int64
	// Aborts counts batches aborted by a rebalance, or because the broker refused an output
	// for a reason other than a fence; their records are delivered again.
	Aborts int64
	// Reinits counts client re-initialisations (resume, abort).
	Reinits int64
	// Replayed counts records a shadow applied (hook protocol 2).
	Replayed int64
}

// Loop is a Participant that owns a franz-go client and runs the consume loop. Prepare stops
// polling after the batch in hand, commits it, pauses fetching and holds. Resume and Abort both
// re-initialise the client (closing the old one without leaving the group): the new
// transactional producer bumps the epoch of the transactional id, fencing every other copy of
// this process, and the new static member replaces the old member id, fencing its consumer.
// Fetching then restarts from the group's committed offsets, which are the boundary.
type Loop struct {
	cfg  LoopConfig
	logf func(string, ...any)

	mu         sync.Mutex
	pending    []*ctlReq
	pollCancel context.CancelFunc
	state      State
	boundary   *Boundary
	resumed    Offsets // the answer of the last resume, for a retried resume
	cl         *kgo.Client
	gate       *gate              // the dialer gate of cl
	assigned   map[string][]int32 // the group's assignment to cl
	shadow     *shadow            // while StateShadow; owned by Run
	shadowView Status             // the shadow's fields of Status, under mu
	initAt     time.Time
	wake       chan struct{}
	done       chan struct{}
	runErr     error
	started    bool
	stopped    bool

	sess  *kgo.GroupTransactSession // nil when not transactional; owned by Run
	ready chan Offsets              // offsets fetched after the current client joined

	processed, commits, aborts, reinits, replayed atomic.Int64
	produceAborts                                 int // batches in a row aborted for refused outputs (loop goroutine)
}

type ctlReq struct {
	op   string
	ctx  context.Context
	to   Offsets // advance
	resp chan ctlResp
}

type ctlResp struct {
	b    Boundary
	offs Offsets
	adv  Advanced
	err  error
}

// NewLoop checks cfg and returns a Loop; Run runs it.
func NewLoop(cfg LoopConfig) (*Loop, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("kafkahooks: loop: no brokers")
	case cfg.Group == "":
		return nil, errors.New("kafkahooks: loop: no group")
	case len(cfg.Topics) == 0:
		return nil, errors.New("kafkahooks: loop: no topics")
	case cfg.Handle == nil:
		return nil, errors.New("kafkahooks: loop: no Handle function")
	case cfg.GroupProtocol != "" && cfg.GroupProtocol != GroupProtocolClassic && cfg.GroupProtocol != GroupProtocolConsumer:
		return nil, fmt.Errorf("kafkahooks: loop: group protocol %q: want %q or %q", cfg.GroupProtocol, GroupProtocolClassic, GroupProtocolConsumer)
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 45 * time.Second
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 500
	}
	if cfg.EndTimeout <= 0 {
		cfg.EndTimeout = 30 * time.Second
	}
	if cfg.FetchMaxWait <= 0 {
		cfg.FetchMaxWait = 500 * time.Millisecond
	}
	if cfg.Dialer == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		d.SetMultipathTCP(false)
		cfg.Dialer = d.DialContext
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Loop{cfg: cfg, logf: logf, state: StateRunning, wake: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

// Stats returns the loop's counters.
func (l *Loop) Stats() LoopStats {
	return LoopStats{Processed: l.processed.Load(), Commits: l.commits.Load(), Aborts: l.aborts.Load(), Reinits: l.reinits.Load(), Replayed: l.replayed.Load()}
}

// InitializedAt is when the current client finished initialising its producer: from then on,
// no other copy with the same transactional id can commit.
func (l *Loop) InitializedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.initAt
}

// Done is closed when Run has returned.
func (l *Loop) Done() <-chan struct{} { return l.done }

// Run consumes until ctx is done (then it commits what it processed and closes the client
// without leaving the group, as a static member does) or a fatal error: being fenced by
// another copy, a failed commit. It can run once.
func (l *Loop) Run(ctx context.Context) (err error) {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		return errors.New("kafkahooks: loop: Run called twice")
	}
	l.started = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.runErr, l.stopped = err, true
		pending := l.pending
		l.pending = nil
		cl := l.cl
		sh := l.shadow
		l.mu.Unlock()
		for _, r := range pending {
			r.resp <- ctlResp{err: fmt.Errorf("the consume loop stopped: %v", err)}
		}
		if cl != nil {
			cl.Close()
		}
		if sh != nil {
			sh.cl.Close()
		}
		close(l.done)
	}()

	l.mu.Lock()
	restored := l.cl != nil // a test's stand-in for a copy restored at a boundary
	l.mu.Unlock()
	if !restored {
		if err := l.connect(ctx, true, nil); err != nil {
			return err
		}
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		l.mu.Lock()
		if len(l.pending) > 0 {
			req := l.pending[0]
			l.pending = l.pending[1:]
			l.mu.Unlock()
			req.resp <- l.handleCtl(req)
			continue
		}
		if l.state == StatePrepared {
			l.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-l.wake:
			}
			continue
		}
		if l.state == StateShadow {
			l.mu.Unlock()
			if err := l.replayStep(ctx); err != nil {
				return err
			}
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		l.pollCancel = cancel
		cl := l.cl
		l.mu.Unlock()

		fetches := cl.PollRecords(pctx, l.cfg.MaxPollRecords)
		l.mu.Lock()
		l.pollCancel = nil
		l.mu.Unlock()
		cancel()
		if err := l.fetchErrors(fetches); err != nil {
			return err
		}
		if recs := fetches.Records(); len(recs) > 0 {
			if err := l.process(ctx, recs); err != nil {
				return err
			}
		}
	}
}

// connect creates the client: producer first (fencing), then afterInit (if any), then the
// group. Each client dials through a gate of its own (see gate).
func (l *Loop) connect(ctx context.Context, first bool, afterInit func(context.Context, *kgo.Client) error) error {
	ready := make(chan Offsets, 1)
	signal := func(o Offsets) {
		select {
		case ready <- o:
		default:
		}
	}
	g := newGate()
	assigned := map[string][]int32{}
	opts := []kgo.Opt{
		kgo.SeedBrokers(l.cfg.Brokers...),
		kgo.Dialer(g.dialer(l.cfg.Dialer)),
		kgo.ConsumerGroup(l.cfg.Group),
		kgo.SessionTimeout(l.cfg.SessionTimeout),
		kgo.FetchMaxWait(l.cfg.FetchMaxWait),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, added map[string][]int32) {
			l.mu.Lock()
			for t, ps := range added {
				assigned[t] = append(assigned[t], ps...)
			}
			l.mu.Unlock()
			if len(added) == 0 {
				signal(Offsets{})
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			l.mu.Lock()
			removeAssigned(assigned, lost)
			l.mu.Unlock()
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			l.mu.Lock()
			removeAssigned(assigned, lost)
			l.mu.Unlock()
		}),
		// Called once the committed offsets are fetched, just before fetching starts there.
		kgo.AdjustFetchOffsetsFn(func(_ context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
			offs := Offsets{}
			for t, ps := range m {
				for p, o := range ps {
					if at := o.EpochOffset().Offset; at >= 0 {
						offs.Set(t, p, at)
					}
				}
			}
			signal(offs)
			return m, nil
		}),
	}
	if l.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(l.cfg.InstanceID))
	}
	if l.cfg.GroupProtocol == GroupProtocolConsumer {
		opts = append(opts, kgo.Balancers(kgo.CooperativeStickyBalancer()), kgo.ServerSideBalancer())
	}
	txn := l.cfg.TransactionalID != ""
	if txn {
		opts = append(opts, kgo.TransactionalID(l.cfg.TransactionalID), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		if l.cfg.TransactionTimeout > 0 {
			opts = append(opts, kgo.TransactionTimeout(l.cfg.TransactionTimeout))
		}
	} else {
		opts = append(opts, kgo.DisableAutoCommit())
	}
	opts = append(opts, l.cfg.Opts...)

	var cl *kgo.Client
	var sess *kgo.GroupTransactSession
	var err error
	if txn {
		if sess, err = kgo.NewGroupTransactSession(opts...); err == nil {
			cl = sess.Client()
		}
	} else {
		cl, err = kgo.NewClient(opts...)
	}
	if err != nil {
		return fmt.Errorf("kafkahooks: create the Kafka client: %w", err)
	}
	// InitProducerID now rather than at the first produce: it aborts a previous copy's open
	// transaction and bumps the epoch, so no other copy commits from here on, and the group's
	// offsets are stable before we fetch them.
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		cl.Close()
		return fmt.Errorf("kafkahooks: initialise the producer (transactional id %q): %w", l.cfg.TransactionalID, err)
	}
	l.mu.Lock()
	l.initAt = time.Now()
	l.mu.Unlock()
	l.logf("kafkahooks: producer id %d epoch %d (transactional id %q)", id, epoch, l.cfg.TransactionalID)
	if first && l.cfg.BeforeConsume != nil {
		if err := l.cfg.BeforeConsume(ctx, cl); err != nil {
			cl.Close()
			return fmt.Errorf("kafkahooks: before consuming: %w", err)
		}
	}
	if afterInit != nil {
		if err := afterInit(ctx, cl); err != nil {
			cl.Close()
			return err
		}
	}
	cl.AddConsumeTopics(l.cfg.Topics...)
	l.mu.Lock()
	l.cl, l.gate, l.assigned = cl, g, assigned
	l.mu.Unlock()
	l.sess, l.ready = sess, ready
	return nil
}

// fetchErrors returns the fatal errors of a poll and logs the others.
func (l *Loop) fetchErrors(fs kgo.Fetches) error {
	for _, fe := range fs.Errors() {
		switch {
		case errors.Is(fe.Err, context.Canceled), errors.Is(fe.Err, context.DeadlineExceeded):
		case errors.Is(fe.Err, kgo.ErrClientClosed):
			return fmt.Errorf("kafkahooks: poll: %w", fe.Err)
		case errors.Is(fe.Err, kerr.FencedInstanceID):
			return fmt.Errorf("kafkahooks: poll: another process took over instance id %q: %w", l.cfg.InstanceID, fe.Err)
		default:
			l.logf("kafkahooks: fetch %s[%d]: %v", fe.Topic, fe.Partition, fe.Err)
		}
	}
	return nil
}

// process handles one batch and commits it.
func (l *Loop) process(ctx context.Context, recs []*kgo.Record) error {
	// The batch is finished even when ctx ends meanwhile (SIGTERM): commit what is in hand.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.EndTimeout)
	defer cancel()
	l.mu.Lock()
	cl := l.cl
	l.mu.Unlock()
	b := &Batch{Records: recs, cl: cl, ctx: ectx}
	if l.sess == nil {
		if err := l.cfg.Handle(ctx, b); err != nil {
			return fmt.Errorf("kafkahooks: handle a batch: %w", err)
		}
		if err := cl.Flush(ectx); err != nil {
			return fmt.Errorf("kafkahooks: flush outputs: %w", err)
		}
		if err := b.failed(); err != nil {
			return fmt.Errorf("kafkahooks: produce outputs: %w", err)
		}
		if err := cl.CommitUncommittedOffsets(ectx); err != nil {
			if errors.Is(err, kerr.FencedInstanceID) {
				return fmt.Errorf("kafkahooks: commit: another process took over instance id %q: %w", l.cfg.InstanceID, err)
			}
			// At least once: the records are delivered again after the rebalance.
			l.aborts.Add(1)
			if l.cfg.OnAborted != nil {
				l.cfg.OnAborted()
			}
			l.logf("kafkahooks: commit failed, the batch will be delivered again: %v", err)
			return nil
		}
		l.processed.Add(int64(len(recs)))
		l.commits.Add(1)
		return nil
	}

	if err := l.sess.Begin(); err != nil {
		return fmt.Errorf("kafkahooks: begin a transaction: %w", err)
	}
	herr := l.cfg.Handle(ctx, b)
	try := kgo.TryCommit
	if herr == nil {
		herr = cl.Flush(ectx)
	}
	perr := b.failed()
	if herr != nil || perr != nil {
		try = kgo.TryAbort
	}
	committed, err := l.sess.End(ectx, try)
	switch {
	case herr != nil:
		return fmt.Errorf("kafkahooks: handle a batch: %w", herr)
	case perr != nil && err == nil && !committed && abortableProduceErr(perr) && l.produceAborts < maxProduceAborts:
		// The broker refused an output for a reason that is not a fence (kfake answered an
		// OUT_OF_ORDER_SEQUENCE_NUMBER right after a commit; Kafka's Java client treats such
		// errors as abortable too) and the abort went through: the session rewound to the
		// committed offsets, so the batch is delivered again, as after a rebalance.
		l.produceAborts++
		l.aborts.Add(1)
		if l.cfg.OnAborted != nil {
			l.cfg.OnAborted()
		}
		l.logf("kafkahooks: an output was refused (%v); the transaction was aborted and its %d records will be delivered again", perr, len(recs))
		return nil
	case perr != nil:
		// Fenced producers usually end here: the broker refused the outputs.
		return fmt.Errorf("kafkahooks: produce outputs: %w", perr)
	case err != nil:
		// kgo: no error of End is retryable; fenced producers may end here too.
		return fmt.Errorf("kafkahooks: end the transaction: %w", err)
	case !committed:
		// A rebalance (or a lost session) aborted it; kgo rewound to the committed offsets.
		l.aborts.Add(1)
		if l.cfg.OnAborted != nil {
			l.cfg.OnAborted()
		}
		l.logf("kafkahooks: transaction aborted by a rebalance; its %d records will be delivered again", len(recs))
		return nil
	}
	l.produceAborts = 0
	l.processed.Add(int64(len(recs)))
	l.commits.Add(1)
	return nil
}

// maxProduceAborts bounds how many batches in a row may be aborted for refused outputs before
// the loop gives up: an error that keeps coming back is not transient.
const maxProduceAborts = 5

// abortableProduceErr says whether a refused output leaves the transactional producer usable
// once its transaction is aborted: anything but a fence (another producer took the
// transactional id, or another member the instance id) or an authorisation failure.
func abortableProduceErr(err error) bool {
	for _, fatal := range []error{kerr.ProducerFenced, kerr.InvalidProducerEpoch, kerr.InvalidProducerIDMapping,
		kerr.TransactionalIDAuthorizationFailed, kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.FencedInstanceID, kerr.InvalidTxnState} {
		if errors.Is(err, fatal) {
			return false
		}
	}
	var ke *kerr.Error
	return errors.As(err, &ke) // a broker's answer, not a client-side failure (context, closed client)
}

// handleCtl runs a prepare, resume or abort in the loop goroutine, between batches.
func (l *Loop) handleCtl(r *ctlReq) ctlResp {
	switch r.op {
	case "prepare":
		return l.prepare(r.ctx)
	case "release":
		return l.release()
	case "shadow":
		return l.becomeShadow(r.ctx)
	case "advance":
		return l.advance(r.ctx, r.to)
	case "resume", "abort":
		l.mu.Lock()
		st, resumed := l.state, l.resumed
		l.mu.Unlock()
		if st == StateShadow {
			if r.op == "abort" {
				return ctlResp{err: fmt.Errorf("%w: a shadow does not abort (its state is not the source's): remove it", ErrState)}
			}
			offs, err := l.takeover(r.ctx)
			return ctlResp{offs: offs, err: err}
		}
		if st == StateRunning {
			if r.op == "abort" {
				return ctlResp{}
			}
			if resumed != nil && spoken(r.ctx) < 3 {
				return ctlResp{offs: resumed} // a retried resume, in versions 1 and 2
			}
			if resumed != nil {
				// Version 3 answers no resume from memory: the copy runs, and what it resumed
				// from is past; the broker's committed offsets say where it is now.
				return ctlResp{err: fmt.Errorf("%w: running since a resume; a resume is answered once (version 3)", ErrState)}
			}
			return ctlResp{err: ErrNotPrepared}
		}
		offs, err := l.reinit(r.ctx, nil)
		if err == nil && r.op == "abort" {
			l.mu.Lock()
			l.resumed = nil // a resume now is not a retry: nothing was prepared
			l.mu.Unlock()
		}
		return ctlResp{offs: offs, err: err}
	}
	return ctlResp{err: fmt.Errorf("unknown operation %q", r.op)}
}

func (l *Loop) prepare(ctx context.Context) ctlResp {
	l.mu.Lock()
	switch l.state {
	case StatePrepared:
		b := *l.boundary
		l.mu.Unlock()
		return ctlResp{b: b}
	case StateShadow:
		l.mu.Unlock()
		return ctlResp{err: fmt.Errorf("%w: a shadow has no boundary of its own", ErrState)}
	}
	cl, g := l.cl, l.gate
	l.mu.Unlock()
	cl.PauseFetchTopics(l.cfg.Topics...)
	fail := func(err error) ctlResp {
		g.open()
		cl.ResumeFetchTopics(l.cfg.Topics...)
		return ctlResp{err: err}
	}
	if l.sess == nil {
		// Transactional batches are committed when they end; here outputs go first, then offsets.
		err := cl.Flush(ctx)
		if err == nil {
			err = cl.CommitUncommittedOffsets(ctx)
		}
		if err != nil {
			return fail(fmt.Errorf("commit at the boundary: %w", err))
		}
	}
	offs, err := l.settle(ctx, cl)
	if err != nil {
		return fail(err)
	}
	// From the boundary on the client opens no connection: a copy restored from a dump taken
	// now (its connections restored closed) reaches no broker until it is resumed, released
	// or made a shadow. The gate closes only here, after the settle, whose admin requests may
	// need a connection dialled anew: with the gate closed first, twins on the lab that had
	// run for 20 s and more stalled in the prepare until its context ended (broker side all
	// settled), and did not once the gate closed here.
	g.close()
	member, gen := cl.GroupMetadata()
	b := Boundary{
		Protocol:         Version,
		Group:            l.cfg.Group,
		MemberID:         member,
		InstanceID:       l.cfg.InstanceID,
		Generation:       gen,
		Transactional:    l.sess != nil,
		Offsets:          offs,
		RecordsProcessed: l.processed.Load(),
	}
	if l.cfg.Digest != nil {
		b.Digest = l.cfg.Digest()
	}
	l.mu.Lock()
	l.state, l.boundary, l.resumed = StatePrepared, &b, nil
	l.mu.Unlock()
	l.logf("kafkahooks: prepared at %v (member %s generation %d)", b.Offsets, member, gen)
	return ctlResp{b: b}
}

// settlePoll is how often settle asks the broker again.
const settlePoll = 10 * time.Millisecond

// settle waits until the last transaction is complete on the broker and the group's committed
// offsets are stable, and checks that the broker's offsets are the client's. It returns them:
// the boundary.
func (l *Loop) settle(ctx context.Context, cl *kgo.Client) (Offsets, error) {
	adm := kadm.NewClient(cl)
	if l.sess != nil {
		if err := l.awaitTransaction(ctx, adm); err != nil {
			return nil, err
		}
	}
	return l.stableOffsets(ctx, adm, offsetsFromEpochs(cl.CommittedOffsets()))
}

// awaitTransaction waits until the loop's last transaction is complete on the broker: its
// markers are written (an EndTxn answers before that). A transaction still open is an error.
// When the broker cannot describe the transaction (an ACL may forbid it) it logs that and
// returns nil: the stable offsets that follow are what matters.
func (l *Loop) awaitTransaction(ctx context.Context, adm *kadm.Client) error {
	id := l.cfg.TransactionalID
	state := ""
	err := wait.Until(ctx, settlePoll, func() (bool, error) {
		txns, err := adm.DescribeTransactions(ctx, id)
		if err != nil {
			l.logf("kafkahooks: describe transaction %q: %v", id, err)
			return true, nil
		}
		d := txns[id]
		if d.Err != nil {
			l.logf("kafkahooks: describe transaction %q: %v", id, d.Err)
			return true, nil
		}
		state = d.State
		switch d.State {
		case "Ongoing":
			return false, fmt.Errorf("transaction %q is still open at the boundary (producer %d epoch %d)", id, d.ProducerID, d.ProducerEpoch)
		case "PrepareCommit", "PrepareAbort", "PrepareEpochFence":
			return false, nil
		}
		return true, nil
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("wait for transaction %q to complete (%s): %w", id, state, err)
	}
	return err
}

// stableOffsets waits until the group's committed offsets are stable at the broker (an
// OffsetFetch with require_stable answers no UNSTABLE_OFFSET_COMMIT), and returns those of
// the partitions in mine, the client's own committed offsets, after checking that they are
// the same: other members' partitions are not part of our boundary.
func (l *Loop) stableOffsets(ctx context.Context, adm *kadm.Client, mine Offsets) (Offsets, error) {
	all, err := l.fetchStable(ctx, adm)
	if err != nil {
		return nil, err
	}
	ours := all.Only(mine)
	if !ours.Equal(mine) {
		return nil, fmt.Errorf("the broker's committed offsets %v are not the client's %v", ours, mine)
	}
	return ours, nil
}

// fetchStable waits until the group's committed offsets of the loop's topics are stable at
// the broker and returns them.
func (l *Loop) fetchStable(ctx context.Context, adm *kadm.Client) (Offsets, error) {
	var all Offsets
	err := wait.Until(ctx, settlePoll, func() (bool, error) {
		resp, err := adm.FetchOffsetsForTopics(kadm.RequireStable(ctx), l.cfg.Group, l.cfg.Topics...)
		if err != nil {
			return false, fmt.Errorf("fetch the committed offsets of group %q: %w", l.cfg.Group, err)
		}
		unstable := false
		var perr error
		resp.EachError(func(o kadm.OffsetResponse) {
			switch {
			case errors.Is(o.Err, kerr.UnstableOffsetCommit):
				unstable = true
			case perr == nil:
				perr = fmt.Errorf("committed offset of %s[%d]: %w", o.Topic, o.Partition, o.Err)
			}
		})
		if perr != nil || unstable {
			return false, perr
		}
		all = OffsetsFromKadm(resp)
		return true, nil
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil, fmt.Errorf("wait for the committed offsets to be stable: %w", err)
	}
	return all, err
}

// reinit replaces the client and waits until fetching restarted from the committed offsets.
// afterInit (optional) runs once the new producer has fenced every other copy, before the
// group is joined.
func (l *Loop) reinit(ctx context.Context, afterInit func(context.Context, *kgo.Client) error) (Offsets, error) {
	start := time.Now()
	l.mu.Lock()
	old, oldGate := l.cl, l.gate
	var oldMember string
	boundary := l.boundary
	l.cl = nil
	l.mu.Unlock()
	if old != nil {
		// A classic static member's Close sends no LeaveGroup: the group keeps our slot, and
		// the new client's JoinGroup with the same instance id takes it over. A KIP-848 group
		// lets a new member take a static member's instance id only once that member has left
		// with member epoch -2 (its Close sends that heartbeat) or its session has expired:
		// without the leave the new client is refused (UNRELEASED_INSTANCE_ID) for the
		// broker's session timeout, 45 s without consuming, and the group's epoch moves twice
		// (measured on Kafka 4.4). franz-go's Close sends that leave without the instance id,
		// which Kafka refuses (see leaveStatic): so under KIP-848 the new client sends the
		// leave for the old member before it joins.
		//
		// The old client may dial again to close: this copy is now the one that runs (resumed
		// or aborted), nothing else shares its identity, and its Close sends no records. Held
		// at the gate, its Close waited 1 s for the fetch sessions' close (measured: "old
		// client closed in 1.019s" of a 1.088s resume), and under KIP-848 3 s for its leave.
		// Its connections may be dead (restored by CRIU closed): do not wait long.
		if l.staticConsumerProtocol() {
			oldMember, _ = old.GroupMetadata()
		}
		if oldGate != nil {
			oldGate.open()
		}
		closed := make(chan struct{})
		go func() { old.Close(); close(closed) }()
		select {
		case <-closed:
			l.logf("kafkahooks: old client closed in %s", time.Since(start).Round(time.Millisecond))
		case <-time.After(3 * time.Second):
			l.logf("kafkahooks: the old client is still closing after 3s; going on")
		}
	}
	l.reinits.Add(1)
	init := afterInit
	if oldMember != "" {
		init = func(ctx context.Context, cl *kgo.Client) error {
			l.leaveStatic(ctx, cl, oldMember)
			if afterInit != nil {
				return afterInit(ctx, cl)
			}
			return nil
		}
	}
	if err := l.connect(ctx, false, init); err != nil {
		return nil, err
	}
	var offs Offsets
	select {
	case offs = <-l.ready:
	case <-ctx.Done():
		// The new client stays; it fetches but nothing is polled until the next resume or
		// abort replaces it again.
		return nil, fmt.Errorf("wait for the group to assign partitions and fetch offsets: %w", ctx.Err())
	}
	if boundary != nil && !offs.Equal(boundary.Offsets) {
		l.logf("kafkahooks: WARNING: resuming from %v, not from the boundary %v: another consumer committed meanwhile", offs, boundary.Offsets)
	}
	l.mu.Lock()
	l.state, l.boundary, l.resumed = StateRunning, nil, offs
	l.mu.Unlock()
	l.logf("kafkahooks: fetching again from %v, %s after the call", offs, time.Since(start).Round(time.Millisecond))
	return offs, nil
}

// staticConsumerProtocol: the loop is a static member of a KIP-848 group.
func (l *Loop) staticConsumerProtocol() bool {
	return l.cfg.GroupProtocol == GroupProtocolConsumer && l.cfg.InstanceID != ""
}

// leaveStatic sends, through cl, the leave of the KIP-848 static member member: a
// ConsumerGroupHeartbeat with member epoch -2 and the instance id. The group then keeps the
// member's assignment for a new member with the same instance id, which takes it over with no
// new group epoch (no rebalance). franz-go v1.22.3 sends this leave on Close without the
// instance id (kgo/consumer_group_848.go, leave848), and Apache Kafka refuses it
// (GroupMetadataManager: InvalidRequestException "InstanceId can't be null."), so that the
// member kept the instance id until its session expired. A failure is logged, not returned:
// the session timeout still frees the instance id.
func (l *Loop) leaveStatic(ctx context.Context, cl *kgo.Client, member string) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Group, req.MemberID, req.MemberEpoch = l.cfg.Group, member, -2
	id := l.cfg.InstanceID
	req.InstanceID = &id
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		l.logf("kafkahooks: leave of the old static member %s (instance %s) failed: %v; the group frees the instance id when its session expires", member, id, err)
		return
	}
	l.logf("kafkahooks: old static member %s (instance %s) left with epoch -2 in %s", member, id, time.Since(start).Round(time.Millisecond))
}

// do queues a control request for the loop goroutine and interrupts its poll.
func (l *Loop) do(ctx context.Context, op string) ctlResp {
	return l.doReq(&ctlReq{op: op, ctx: ctx})
}

func (l *Loop) doReq(r *ctlReq) ctlResp {
	ctx, op := r.ctx, r.op
	r.resp = make(chan ctlResp, 1)
	l.mu.Lock()
	if !l.started {
		l.mu.Unlock()
		return ctlResp{err: errors.New("the consume loop is not running")}
	}
	if l.stopped {
		err := l.runErr
		l.mu.Unlock()
		return ctlResp{err: fmt.Errorf("the consume loop stopped: %v", err)}
	}
	l.pending = append(l.pending, r)
	if l.pollCancel != nil {
		l.pollCancel()
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case resp := <-r.resp:
		return resp
	case <-ctx.Done():
		// The loop still runs the request; its answer is dropped.
		return ctlResp{err: fmt.Errorf("%s: %w", op, ctx.Err())}
	}
}

// Prepare implements Participant.
func (l *Loop) Prepare(ctx context.Context) (Boundary, error) {
	r := l.do(ctx, "prepare")
	return r.b, r.err
}

// Resume implements Participant.
func (l *Loop) Resume(ctx context.Context) (Offsets, error) {
	r := l.do(ctx, "resume")
	return r.offs, r.err
}

// Abort implements Participant. Like Resume, it re-initialises the client: a target that got
// as far as initialising its producer before the rollback has fenced this one.
func (l *Loop) Abort(ctx context.Context) error {
	return l.do(ctx, "abort").err
}

// Status implements Participant.
func (l *Loop) Status() Status {
	l.mu.Lock()
	st, cl, b, view := l.state, l.cl, l.boundary, l.shadowView
	l.mu.Unlock()
	s := Status{Protocol: Version, State: st, Offsets: Offsets{}}
	if l.cfg.Digest != nil {
		s.Capabilities = []string{CapReplay}
	}
	switch {
	case st == StateShadow:
		s.Offsets = view.Position
		s.Position, s.Limit, s.Lag, s.LagTime, s.Replayed = view.Position, view.Limit, view.Lag, view.LagTime, view.Replayed
	case b != nil:
		s.Offsets = b.Offsets
	case cl != nil:
		s.Offsets = offsetsFromEpochs(cl.CommittedOffsets())
	}
	return s
}
