// Package placestate keeps the placement of a fleet of twins in a compacted Kafka topic: the
// twins and their homes, cordoned hosts, every migration started and ended (the cooldowns and
// what is in flight) and the decisions that started them. A controller that reads it back
// (Load) after a restart knows all it knew, so it holds nothing of its own.
//
// A store opened WithTransactionalID writes only in Kafka transactions under that id, and
// opening it initialises the producer id at once: a second store opened with the same id
// fences the first, whose next write fails with ErrFenced — Kafka's own fencing, so exactly one
// controller acts at a time. A controller records a migration's start (StartMove) and only
// migrates once that write committed; a fenced controller therefore starts nothing more, and
// its successor sees the move in flight.
//
// Records are JSON values under keys "twin/ID", "cordon/HOST" (a tombstone uncordons),
// "move/TWIN" (the twin's last migration) and "decision/TIME/TWIN" on one partition, so a
// reader sees them in the order they were written.
package placestate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/sensors"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// DefaultTopic is the topic a store uses unless WithTopic says otherwise.
const DefaultTopic = "ftwin-placement"

// ErrFenced is returned by a transactional store's writes once another store opened with the
// same transactional id: this one must stop acting.
var ErrFenced = errors.New("placestate: fenced: another controller opened the store with the same transactional id")

// Twin is a twin of the fleet.
type Twin struct {
	ID string `json:"id"`
	// Home is the host its sensors are at; Host where it was last placed.
	Home string `json:"home"`
	Host string `json:"host"`
	// Group is its consumer group, Input its sensors' topic, Output the topic of its results.
	Group  string `json:"group"`
	Input  string `json:"input"`
	Output string `json:"output"`
}

// Cordon marks a host that takes no twins.
type Cordon struct {
	Host   string    `json:"host"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
}

// Move is a twin's last migration.
type Move struct {
	Twin     string    `json:"twin"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Rule     string    `json:"rule"`
	By       string    `json:"by"` // the controller's or the drain's name
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended,omitzero"`
	Result   string    `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
	StreamMs float64   `json:"stream_gap_ms,omitempty"`
}

// InFlight says the move was started and its end not recorded.
func (m Move) InFlight() bool { return m.Ended.IsZero() }

// State is the store's content.
type State struct {
	Twins   map[string]Twin   `json:"twins"`
	Cordons map[string]Cordon `json:"cordons"`
	Moves   map[string]Move   `json:"moves"`
	// Decisions are every decision recorded, oldest first.
	Decisions []placement.Decision `json:"decisions"`
}

// Placement is the twins' placement as the policy sees it.
func (s State) Placement() map[string]placement.Twin {
	m := make(map[string]placement.Twin, len(s.Twins))
	for id, t := range s.Twins {
		m[id] = placement.Twin{Host: t.Host, Home: t.Home}
	}
	return m
}

// PolicyState is the evaluator's view of the state: cooldowns from the moves' starts, the
// moves in flight and the cordons.
func (s State) PolicyState() placement.State {
	st := placement.State{LastMove: map[string]time.Time{}, InFlight: map[string]bool{}, Cordoned: map[string]bool{}}
	for id, m := range s.Moves {
		st.LastMove[id] = m.Started
		if m.InFlight() {
			st.InFlight[id] = true
		}
	}
	for h := range s.Cordons {
		st.Cordoned[h] = true
	}
	return st
}

// TwinIDs are the twins' ids, sorted.
func (s State) TwinIDs() []string {
	ids := make([]string, 0, len(s.Twins))
	for id := range s.Twins {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

type config struct {
	topic string
	txnID string
	opts  []kgo.Opt
}

// Option configures Open.
type Option func(*config)

// WithTopic names the topic (created compacted, one partition, if absent). Default DefaultTopic.
func WithTopic(topic string) Option { return func(c *config) { c.topic = topic } }

// WithTransactionalID makes every write a transaction under id, and Open initialises the
// producer id: any store opened earlier with the same id is fenced from then on (its writes
// fail with ErrFenced). Without it, writes are plain idempotent produces (for commands such as
// cordon that run beside a controller).
func WithTransactionalID(id string) Option { return func(c *config) { c.txnID = id } }

// WithClientOpts adds options to the Kafka clients (a dialer, TLS, SASL).
func WithClientOpts(opts ...kgo.Opt) Option {
	return func(c *config) { c.opts = append(c.opts, opts...) }
}

// Store reads and writes the state topic.
type Store struct {
	cfg     config
	brokers []string
	cl      *kgo.Client
	mu      sync.Mutex // one transaction at a time
	broken  error      // a transactional store that was fenced, or whose transaction's end failed
}

// Broken returns the error that made a transactional store unusable — ErrFenced once another
// store took its transactional id — or nil. Every write returns it from then on.
func (s *Store) Broken() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

// Open connects to brokers, creates the topic if it is absent and, WithTransactionalID,
// fences any earlier holder of the id. Close the store when done.
func Open(ctx context.Context, brokers []string, opts ...Option) (*Store, error) {
	cfg := config{topic: DefaultTopic}
	for _, o := range opts {
		o(&cfg)
	}
	if len(brokers) == 0 {
		return nil, errors.New("placestate: no brokers: give the Kafka bootstrap servers")
	}
	kopts := append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(cfg.topic), kgo.RecordPartitioner(kgo.ManualPartitioner())}, cfg.opts...)
	if cfg.txnID != "" {
		kopts = append(kopts, kgo.TransactionalID(cfg.txnID), kgo.TransactionTimeout(30*time.Second))
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("placestate: Kafka client: %w", err)
	}
	s := &Store{cfg: cfg, brokers: brokers, cl: cl}
	compact := "compact"
	if err := sensors.EnsureTopic(ctx, cl, cfg.topic, 1, map[string]*string{"cleanup.policy": &compact}); err != nil {
		cl.Close()
		return nil, fmt.Errorf("placestate: %w", err)
	}
	if cfg.txnID != "" {
		// An empty transaction initialises the producer id (InitProducerID): this fences the
		// previous holder now, not at our first real write.
		if err := s.write(ctx, nil); err != nil {
			cl.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close closes the store's client.
func (s *Store) Close() { s.cl.Close() }

// Topic is the store's topic.
func (s *Store) Topic() string { return s.cfg.topic }

// Load reads the whole topic (committed records only) and returns the state it holds.
func (s *Store) Load(ctx context.Context) (State, error) {
	st := State{Twins: map[string]Twin{}, Cordons: map[string]Cordon{}, Moves: map[string]Move{}}
	rd, err := verify.NewReader(s.brokers, s.cfg.opts...)
	if err != nil {
		return st, fmt.Errorf("placestate: Kafka client: %w", err)
	}
	defer rd.Close()
	var bad error
	err = verify.ReadTopic(ctx, rd, s.cfg.topic, func(r *kgo.Record) {
		if err := st.apply(string(r.Key), r.Value); err != nil && bad == nil {
			bad = fmt.Errorf("placestate: %s offset %d key %q: %w", s.cfg.topic, r.Offset, r.Key, err)
		}
	})
	if err != nil {
		return st, fmt.Errorf("placestate: read %s: %w", s.cfg.topic, err)
	}
	return st, bad
}

func (st *State) apply(key string, value []byte) error {
	kind, name, _ := strings.Cut(key, "/")
	del := value == nil
	switch kind {
	case "twin":
		if del {
			delete(st.Twins, name)
			return nil
		}
		var t Twin
		if err := json.Unmarshal(value, &t); err != nil {
			return err
		}
		st.Twins[name] = t
	case "cordon":
		if del {
			delete(st.Cordons, name)
			return nil
		}
		var c Cordon
		if err := json.Unmarshal(value, &c); err != nil {
			return err
		}
		st.Cordons[name] = c
	case "move":
		if del {
			delete(st.Moves, name)
			return nil
		}
		var m Move
		if err := json.Unmarshal(value, &m); err != nil {
			return err
		}
		st.Moves[name] = m
		if m.Result == "committed" || strings.HasPrefix(m.Result, "committed") {
			if t, ok := st.Twins[m.Twin]; ok {
				t.Host = m.To
				st.Twins[m.Twin] = t
			}
		}
	case "decision":
		if del {
			return nil
		}
		var d placement.Decision
		if err := json.Unmarshal(value, &d); err != nil {
			return err
		}
		st.Decisions = append(st.Decisions, d)
	default:
		return fmt.Errorf("unknown record kind %q", kind)
	}
	return nil
}

// Record is one write: Key and a JSON-able Value (nil: a tombstone).
type Record struct {
	Key   string
	Value any
}

// TwinRecord, CordonRecord, UncordonRecord, MoveRecord and DecisionRecord build the records
// of Write.
func TwinRecord(t Twin) Record          { return Record{"twin/" + t.ID, t} }
func CordonRecord(c Cordon) Record      { return Record{"cordon/" + c.Host, c} }
func UncordonRecord(host string) Record { return Record{"cordon/" + host, nil} }
func MoveRecord(m Move) Record          { return Record{"move/" + m.Twin, m} }
func DecisionRecord(d placement.Decision) Record {
	return Record{fmt.Sprintf("decision/%s/%s", d.Time.UTC().Format(time.RFC3339Nano), d.Twin), d}
}

// Write writes the records, in a transaction for a transactional store (all or none). It
// returns ErrFenced when another store took the transactional id.
func (s *Store) Write(ctx context.Context, recs ...Record) error { return s.write(ctx, recs) }

func (s *Store) write(ctx context.Context, recs []Record) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	krs := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		kr := &kgo.Record{Key: []byte(r.Key), Partition: 0}
		if r.Value != nil {
			if kr.Value, err = json.Marshal(r.Value); err != nil {
				return fmt.Errorf("placestate: encode %s: %w", r.Key, err)
			}
		}
		krs = append(krs, kr)
	}
	if s.cfg.txnID == "" {
		if err := s.cl.ProduceSync(ctx, krs...).FirstErr(); err != nil {
			return fmt.Errorf("placestate: write %s: %w", s.cfg.topic, err)
		}
		return nil
	}
	if s.broken != nil {
		return s.broken
	}
	// The producer id and epoch this transaction runs under: what takenOver compares the
	// coordinator's with when the transaction's end fails.
	pid, epoch, err := s.cl.ProducerID(ctx)
	if err != nil {
		if fenced(err) {
			s.broken = fmt.Errorf("%w (%v)", ErrFenced, err)
			return s.broken
		}
		return fmt.Errorf("placestate: initialise the producer id of %q: %w", s.cfg.txnID, err)
	}
	if err := s.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("placestate: begin a transaction: %w", err)
	}
	commit := kgo.TryCommit
	if perr := s.cl.ProduceSync(ctx, krs...).FirstErr(); perr != nil {
		commit, err = kgo.TryAbort, perr
	}
	eerr := s.cl.EndTransaction(context.WithoutCancel(ctx), commit)
	switch {
	case fenced(err) || fenced(eerr) || (eerr != nil && s.takenOver(ctx, pid, epoch, errors.Is(eerr, kerr.InvalidTxnState))):
		s.broken = fmt.Errorf("%w (%v)", ErrFenced, errors.Join(err, eerr))
		return s.broken
	case eerr != nil:
		// The client's transaction state is unknown now: no further write may rely on it.
		s.broken = fmt.Errorf("placestate: end a transaction on %s (the store is unusable now: open another): %w", s.cfg.topic, errors.Join(err, eerr))
		return s.broken
	case err != nil:
		return fmt.Errorf("placestate: write %s in a transaction (aborted): %w", s.cfg.topic, err)
	}
	return nil
}

// takenOver asks the transaction coordinator, after a transaction's end failed, whether the
// transactional id has moved on past the producer id and epoch the transaction ran under:
// another store initialised it (or the coordinator aborted the transaction and bumped the
// epoch), so this store is fenced although the broker's answer did not say so. A store opened
// while this one's EndTxn is in flight gets exactly that: the coordinator aborts the open
// transaction with an epoch bump, and the late commit at the old epoch is refused as
// INVALID_TXN_STATE (kfake: it looks like a retry of that abort) or UNKNOWN_SERVER_ERROR
// (Apache Kafka 4.4, seen in this project's e2e fencing test). refused says the coordinator
// answered INVALID_TXN_STATE, i.e. holds no open transaction of ours: then any later epoch is
// another's. Otherwise our own commit may have gone through before the error (transaction
// version 2 bumps the epoch once at every end, leaving CompleteCommit), so it takes another
// producer id, an epoch beyond that one, or a later epoch in any other state. Unknown (the
// coordinator could not be asked) counts as not taken over: the store is then merely unusable.
// (kfake's states are only Ongoing and Empty: there a commit of ours that went through and then
// failed to answer would read as taken over, which costs nothing: the store stops either way.)
func (s *Store) takenOver(ctx context.Context, pid int64, epoch int16, refused bool) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ds, err := kadm.NewClient(s.cl).DescribeTransactions(ctx, s.cfg.txnID)
	if err != nil {
		return false
	}
	d, ok := ds[s.cfg.txnID]
	switch {
	case !ok || d.Err != nil:
		return false
	case d.ProducerID != pid:
		return true
	case refused:
		return d.ProducerEpoch > epoch
	default:
		return d.ProducerEpoch > epoch+1 || (d.ProducerEpoch > epoch && d.State != "CompleteCommit")
	}
}

func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed) || errors.Is(err, kerr.InvalidProducerIDMapping)
}
