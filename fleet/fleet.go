// Package fleet runs a fleet of digital twins on a lab and moves them by policy: it starts
// twins (each its own consumer group, sensors' topic and output topic) and their sensors,
// finds where each runs (the hosts' containerd), live-migrates them through package migrate
// with a limit on concurrent migrations, records each migration in the placement state
// (package placestate) before it starts and after it ends, measures the signals the policy
// reads (Measurer) and verifies every twin's output (package verify).
//
// The decisions come from package placement; the drain (Fleet.Drain) and the controller
// (Controller) are built on Execute.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
	"github.com/ftwin-migrate/ftwin-migrate/sensors"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// Fleet is the twins of a lab.
type Fleet struct {
	Lab     *lab.Lab
	Brokers []string
	cfg     config
}

type config struct {
	pkiDir       string
	agentAddr    func(h *lab.Host) string
	phaseTimeout time.Duration
	edit         func(*migrate.Options)
}

// Option configures New.
type Option func(*config)

// WithPKI names the directory of the lab's certificates (pki.Init). Default LAB_DIR/pki, where
// `lab up` and package scenario put them.
func WithPKI(dir string) Option { return func(c *config) { c.pkiDir = dir } }

// WithAgentAddr says where a host's migration agent listens. Default HOST_IP:lab.AgentPort.
func WithAgentAddr(fn func(h *lab.Host) string) Option { return func(c *config) { c.agentAddr = fn } }

// WithPhaseTimeout bounds each phase of every migration (migrate.Options.PhaseTimeout).
// Default 2 minutes.
func WithPhaseTimeout(d time.Duration) Option { return func(c *config) { c.phaseTimeout = d } }

// WithMigrateOptions edits every migration's options after the fleet's own.
func WithMigrateOptions(fn func(*migrate.Options)) Option { return func(c *config) { c.edit = fn } }

// New returns the fleet of lab l, its Kafka at brokers.
func New(l *lab.Lab, brokers []string, opts ...Option) *Fleet {
	cfg := config{pkiDir: l.Dir + "/pki", phaseTimeout: 2 * time.Minute,
		agentAddr: func(h *lab.Host) string { return net.JoinHostPort(h.IP, fmt.Sprint(lab.AgentPort)) }}
	for _, o := range opts {
		o(&cfg)
	}
	return &Fleet{Lab: l, Brokers: brokers, cfg: cfg}
}

// Spec is the twin id whose sensors are at home, with the names the fleet gives it: group
// ftwin-ID, sensors' topic sensors-ID, output topic twin-state-ID. It starts at home.
func Spec(id, home string) placestate.Twin {
	return placestate.Twin{ID: id, Home: home, Host: home, Group: "ftwin-" + id, Input: "sensors-" + id, Output: "twin-state-" + id}
}

// TwinConfig says how the twins run.
type TwinConfig struct {
	// Binary is the static twin executable (test/workloads/twin).
	Binary string
	// StateMiB is each twin's state (16 to 1024). Default 16.
	StateMiB int
	// Devices is the number of sensors each twin serves. Default 16.
	Devices int
	// Partitions of each twin's sensors' topic. Default 1.
	Partitions int32
	// Args are added to each twin's command line.
	Args []string
}

func (c *TwinConfig) defaults() {
	if c.StateMiB == 0 {
		c.StateMiB = 16
	}
	if c.Devices == 0 {
		c.Devices = 16
	}
	if c.Partitions == 0 {
		c.Partitions = 1
	}
}

// Workload is twin t's container.
func (f *Fleet) Workload(t placestate.Twin, c TwinConfig) lab.Workload {
	c.defaults()
	return lab.Workload{ID: t.ID, Binary: c.Binary, Args: append([]string{
		"-brokers", strings.Join(f.Brokers, ","), "-group", t.Group, "-in", t.Input, "-out", t.Output,
		"-state-mib", fmt.Sprint(c.StateMiB), "-instance-id", t.ID, "-devices", fmt.Sprint(c.Devices),
	}, c.Args...)}
}

// Start creates twin t's topics, imports its image on every host (as a registry would have it
// everywhere) and runs it on t.Host.
func (f *Fleet) Start(ctx context.Context, t placestate.Twin, c TwinConfig) error {
	c.defaults()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.Brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	for _, topic := range []string{t.Input, t.Output} {
		if err := sensors.EnsureTopic(ctx, cl, topic, c.Partitions, nil); err != nil {
			return fmt.Errorf("fleet: twin %s: %w", t.ID, err)
		}
	}
	w := f.Workload(t, c)
	for _, h := range f.Lab.Hosts {
		if _, err := h.ImportImage(ctx, w); err != nil {
			return err
		}
	}
	h, err := f.Lab.Host(t.Host)
	if err != nil {
		return err
	}
	if err := h.Run(ctx, w); err != nil {
		return fmt.Errorf("fleet: start twin %s: %w", t.ID, err)
	}
	return nil
}

// Instance is a container of a twin on a host.
type Instance struct {
	Host string
	// Status is its task's (running, paused, ...; "" without a task).
	Status string
	// Migrating: a migration has this container as its source (migrate.MigratingLabel).
	Migrating bool
	// Uncommitted: an agent restored it and has not committed it (a migration's copy in flight).
	Uncommitted bool
}

// Settled says the instance runs as the twin's one copy: running, neither a migration's
// source nor its uncommitted copy.
func (i Instance) Settled() bool { return i.Status == "running" && !i.Migrating && !i.Uncommitted }

// Inspect lists every container of the twins on every host.
func (f *Fleet) Inspect(ctx context.Context, ids []string) (map[string][]Instance, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[string][]Instance{}
	ctx = lab.Context(ctx)
	for _, h := range f.Lab.Hosts {
		client, err := h.Client()
		if err != nil {
			return nil, err
		}
		cs, err := client.Containers(ctx)
		if err != nil {
			client.Close()
			return nil, fmt.Errorf("fleet: list the containers of host %s: %w", h.Name, err)
		}
		for _, c := range cs {
			if !want[c.ID()] {
				continue
			}
			in := Instance{Host: h.Name}
			if labels, err := c.Labels(ctx); err == nil {
				in.Migrating = labels[migrate.MigratingLabel] != ""
				in.Uncommitted = labels[agent.RestoredForLabel] != "" && labels[agent.CommittedLabel] == ""
			}
			if task, err := c.Task(ctx, nil); err == nil {
				if st, err := task.Status(ctx); err == nil {
					in.Status = string(st.Status)
				}
			}
			out[c.ID()] = append(out[c.ID()], in)
		}
		client.Close()
	}
	return out, nil
}

// Containers lists the ids of the containers with a running task on host.
func (f *Fleet) Containers(ctx context.Context, host string) ([]string, error) {
	h, err := f.Lab.Host(host)
	if err != nil {
		return nil, err
	}
	client, err := h.Client()
	if err != nil {
		return nil, err
	}
	defer client.Close()
	ctx = lab.Context(ctx)
	cs, err := client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet: list the containers of host %s: %w", host, err)
	}
	var ids []string
	for _, c := range cs {
		task, err := c.Task(ctx, nil)
		if err != nil {
			continue
		}
		if st, err := task.Status(ctx); err == nil && st.Status == "running" {
			ids = append(ids, c.ID())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Locate says where each of the twins runs: the host of its container with a task that is not
// a migration's uncommitted copy (a source frozen mid-migration counts where it is). A twin
// found nowhere is absent from the map.
func (f *Fleet) Locate(ctx context.Context, ids []string) (map[string]string, error) {
	inst, err := f.Inspect(ctx, ids)
	if err != nil {
		return nil, err
	}
	return Where(inst), nil
}

// Where is Locate's answer from Inspect's.
func Where(inst map[string][]Instance) map[string]string {
	at := map[string]string{}
	for id, is := range inst {
		for _, i := range is {
			if i.Uncommitted || (i.Status != "running" && i.Status != "paused" && i.Status != "pausing") {
				continue
			}
			at[id] = i.Host
		}
	}
	return at
}

// MoveResult is one migration's outcome.
type MoveResult struct {
	Twin, From, To string
	Rule           string
	Start, End     time.Time
	// Report is the migration's report (nil if it did not start).
	Report *migrate.Report
	// Err is why it failed (the twin then runs where it was, unless Report says otherwise).
	Err error
	// StreamGap is the longest pause of the twin's output in the move's window (StreamGaps).
	StreamGap time.Duration
}

// Result is the migration's result as the report says ("not started" when none ran).
func (m MoveResult) Result() string {
	switch {
	case m.Report != nil && m.Report.Result != "":
		return m.Report.Result
	case m.Err != nil:
		return "not started"
	}
	return migrate.Committed
}

// Moved says the twin now runs on the target.
func (m MoveResult) Moved() bool {
	r := m.Result()
	return m.Err == nil && (r == migrate.Committed || r == migrate.CommittedUnverified)
}

// Move live-migrates twin id from host from to host to (migrate.Migrate with the twin's Kafka
// hook and the broker check of its boundary).
func (f *Fleet) Move(ctx context.Context, id, from, to string) MoveResult {
	m := MoveResult{Twin: id, From: from, To: to, Start: time.Now()}
	defer func() { m.End = time.Now() }()
	m.Report, m.Err = func() (*migrate.Report, error) {
		src, err := f.Lab.Host(from)
		if err != nil {
			return nil, err
		}
		dst, err := f.Lab.Host(to)
		if err != nil {
			return nil, err
		}
		tlsCfg, err := pki.ClientConfig(f.cfg.pkiDir, src.Name, dst.Name)
		if err != nil {
			return nil, err
		}
		client, err := src.Client()
		if err != nil {
			return nil, err
		}
		defer client.Close()
		o := migrate.Options{Namespace: lab.Namespace, Container: id, Target: f.cfg.agentAddr(dst), TLS: tlsCfg,
			SourceHost: src.Name, Brokers: f.Brokers, PhaseTimeout: f.cfg.phaseTimeout}
		if f.cfg.edit != nil {
			f.cfg.edit(&o)
		}
		return migrate.Migrate(ctx, client, o)
	}()
	m.End = time.Now()
	return m
}

// Progress is an event of Execute: a migration started (Done false) or ended.
type Progress struct {
	Decision placement.Decision
	Done     bool
	Result   MoveResult
	// Finished and Total count the decisions.
	Finished, Total int
}

// ExecOptions configure Execute.
type ExecOptions struct {
	// Concurrency is the most migrations at once. Default 1.
	Concurrency int
	// Store, when set, records each migration: its decision and start before it runs (a
	// write that fails — a fenced controller — skips the migration), its end after.
	Store *placestate.Store
	// By names who moves (a controller's name, "drain").
	By string
	// Progress receives every start and end (from Execute's goroutines, one at a time).
	Progress func(Progress)
}

// ErrNotRecorded is a MoveResult's error when the store refused its start record.
var ErrNotRecorded = errors.New("fleet: the migration's start could not be recorded; not started")

// Execute carries out the decisions, at most o.Concurrency at once, and returns their
// results in the order of decisions. Twins are looked up in twins (for the store's records).
func (f *Fleet) Execute(ctx context.Context, decisions []placement.Decision, twins map[string]placestate.Twin, o ExecOptions) []MoveResult {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	results := make([]MoveResult, len(decisions))
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	finished := 0
	report := func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Done {
			finished++
		}
		p.Finished, p.Total = finished, len(decisions)
		if o.Progress != nil {
			o.Progress(p)
		}
	}
	for i, d := range decisions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = MoveResult{Twin: d.Twin, From: d.From, To: d.To, Rule: d.Rule, Err: ctx.Err()}
				report(Progress{Decision: d, Done: true, Result: results[i]})
				return
			}
			defer func() { <-sem }()
			results[i] = f.execute(ctx, d, twins[d.Twin], o, report)
		}()
	}
	wg.Wait()
	return results
}

func (f *Fleet) execute(ctx context.Context, d placement.Decision, t placestate.Twin, o ExecOptions, report func(Progress)) MoveResult {
	mv := placestate.Move{Twin: d.Twin, From: d.From, To: d.To, Rule: d.Rule, By: o.By, Started: time.Now().UTC()}
	if o.Store != nil {
		if err := o.Store.Write(ctx, placestate.DecisionRecord(d), placestate.MoveRecord(mv)); err != nil {
			m := MoveResult{Twin: d.Twin, From: d.From, To: d.To, Rule: d.Rule, Err: fmt.Errorf("%w: %w", ErrNotRecorded, err)}
			report(Progress{Decision: d, Done: true, Result: m})
			return m
		}
	}
	report(Progress{Decision: d})
	m := f.Move(ctx, d.Twin, d.From, d.To)
	m.Rule = d.Rule
	if o.Store != nil {
		mv.Ended, mv.Result = m.End.UTC(), m.Result()
		if m.Err != nil {
			mv.Error = m.Err.Error()
		}
		recs := []placestate.Record{placestate.MoveRecord(mv)}
		if m.Moved() && t.ID != "" {
			t.Host = d.To
			recs = append(recs, placestate.TwinRecord(t))
		}
		// The migration happened whatever this write says; a fenced controller's successor
		// finds the move in flight and the twin where containerd says.
		_ = o.Store.Write(context.WithoutCancel(ctx), recs...)
	}
	report(Progress{Decision: d, Done: true, Result: m})
	return m
}

// Events reads twin t's committed outputs.
func (f *Fleet) Events(ctx context.Context, t placestate.Twin) ([]verify.Event, error) {
	return readEvents(ctx, f.Brokers, t.Output)
}

// StreamGaps fills in each result's StreamGap from its twin's output (verify.MoveStats: the
// longest pause overlapping the migration's window).
func (f *Fleet) StreamGaps(ctx context.Context, twins map[string]placestate.Twin, results []MoveResult) error {
	cache := map[string][]verify.Event{}
	for i := range results {
		r := &results[i]
		if r.Start.IsZero() || twins[r.Twin].Output == "" {
			continue // not run, or no output topic to read
		}
		evs, ok := cache[r.Twin]
		if !ok {
			var err error
			if evs, err = f.Events(ctx, twins[r.Twin]); err != nil {
				return err
			}
			cache[r.Twin] = evs
		}
		normal := verify.NormalInterval(verify.Stamps(evs))
		r.StreamGap = verify.MoveStats(evs, r.Start, r.End, normal).StreamGap
	}
	return nil
}

// Hosts are the lab's host names, sorted.
func (f *Fleet) Hosts() []string {
	hs := make([]string, len(f.Lab.Hosts))
	for i, h := range f.Lab.Hosts {
		hs[i] = h.Name
	}
	sort.Strings(hs)
	return hs
}

// Recover settles twin id whose migration from host from to host to was cut short by its
// migrator's death (migrate.Recover: the target says whether it committed; the frozen source
// is removed or thawed accordingly). It returns what it did.
func (f *Fleet) Recover(ctx context.Context, id, from, to string) (string, error) {
	src, err := f.Lab.Host(from)
	if err != nil {
		return "", err
	}
	tlsCfg, err := pki.ClientConfig(f.cfg.pkiDir, from, to)
	if err != nil {
		return "", err
	}
	client, err := src.Client()
	if err != nil {
		return "", err
	}
	defer client.Close()
	what, err := migrate.Recover(ctx, client, migrate.RecoverOptions{Namespace: lab.Namespace, Container: id, TLS: tlsCfg})
	if err != nil {
		return what, fmt.Errorf("fleet: recover %s on %s: %w", id, from, err)
	}
	return what, nil
}
