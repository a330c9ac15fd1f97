package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
)

// DefaultTransactionalID is the transactional id controllers share unless told otherwise:
// the newest controller to open the state fences the others.
const DefaultTransactionalID = "ftwin-placement-controller"

// ControllerConfig configures a Controller.
type ControllerConfig struct {
	// Policy is the placement policy. Required.
	Policy *placement.Policy
	// Name names this instance in the records (By). Default "controller".
	Name string
	// TransactionalID is the id the state is written under. Default DefaultTransactionalID.
	TransactionalID string
	// StateTopic is the placement state's topic. Default placestate.DefaultTopic.
	StateTopic string
	// Measure configures the measurement.
	Measure MeasureConfig
	// ResolveAfter: a migration recorded in flight by another controller (fenced or dead)
	// whose twin is found settled on its source again is taken as ended once it started this
	// long ago (its migrator may still be in the phases before the freeze until then). A twin
	// found settled on the target is taken as moved at once. Default 2 minutes.
	ResolveAfter time.Duration
	// Log receives every decision, blocked twin (when its reason changes), migration and
	// resolution. Default: discarded.
	Log *slog.Logger
	// OnSample, OnDecision and OnMove, when set, see every sample, decision and ended migration
	// (from the controller's goroutines).
	OnSample   func(placement.Sample)
	OnDecision func(placement.Decision)
	OnMove     func(MoveResult)
	// OnStart, when set, sees every migration once its start is recorded, before it runs.
	OnStart func(placement.Decision)
}

// Controller measures the fleet, evaluates the policy and migrates twins, its state in the
// placement topic: it keeps nothing of its own beyond the recent samples, so a restarted
// controller carries on where the last one stopped. It writes under a transactional id, so
// opening a second controller fences the first (Run returns placestate.ErrFenced there).
type Controller struct {
	f     *Fleet
	cfg   ControllerConfig
	store *placestate.Store

	series  placement.Series
	blocked map[string]string

	mu      sync.Mutex
	running map[string]bool // twins this controller migrates now
	fenced  error
	wg      sync.WaitGroup
}

// NewController opens the state under the transactional id (fencing any controller that held
// it) and returns a controller; Run it.
func (f *Fleet) NewController(ctx context.Context, cfg ControllerConfig) (*Controller, error) {
	if cfg.Policy == nil {
		return nil, errors.New("fleet: controller: no policy")
	}
	if cfg.Name == "" {
		cfg.Name = "controller"
	}
	if cfg.TransactionalID == "" {
		cfg.TransactionalID = DefaultTransactionalID
	}
	if cfg.StateTopic == "" {
		cfg.StateTopic = placestate.DefaultTopic
	}
	if cfg.ResolveAfter == 0 {
		cfg.ResolveAfter = 2 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	store, err := placestate.Open(ctx, f.Brokers, placestate.WithTopic(cfg.StateTopic), placestate.WithTransactionalID(cfg.TransactionalID))
	if err != nil {
		return nil, fmt.Errorf("fleet: controller %s: %w", cfg.Name, err)
	}
	return &Controller{f: f, cfg: cfg, store: store, blocked: map[string]string{}, running: map[string]bool{}}, nil
}

// Run measures and decides every policy interval until ctx is done (it returns nil) or
// another controller fences this one (placestate.ErrFenced). Either way it waits for the
// migrations it started to end (a migration is never cut: it commits or rolls back) and
// closes its store.
func (c *Controller) Run(ctx context.Context) error {
	defer c.store.Close()
	defer c.wg.Wait()
	st, err := c.store.Load(ctx)
	if err != nil {
		return err
	}
	m, err := c.f.NewMeasurer(st.Twins, c.cfg.Measure)
	if err != nil {
		return err
	}
	defer m.Close()
	c.cfg.Log.Info("controller active", "name", c.cfg.Name, "twins", len(st.Twins), "policy interval", c.cfg.Policy.Interval)
	t := time.NewTicker(c.cfg.Policy.Interval)
	defer t.Stop()
	for {
		if err := c.round(ctx, m); err != nil {
			if errors.Is(err, placestate.ErrFenced) {
				c.cfg.Log.Warn("fenced by another controller: stopping", "name", c.cfg.Name)
				return err
			}
			if berr := c.store.Broken(); berr != nil {
				return berr
			}
			if ctx.Err() != nil {
				return nil
			}
			c.cfg.Log.Warn("round failed", "err", err)
		}
		if err := c.fencedErr(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Controller) fencedErr() error {
	if err := c.store.Broken(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fenced
}

func (c *Controller) round(ctx context.Context, m *Measurer) error {
	if err := c.fencedErr(); err != nil {
		return err
	}
	// What this controller runs, taken before the state is read: a move that ends meanwhile
	// may show in flight in what is read, and is still ours.
	c.mu.Lock()
	mine := maps.Clone(c.running)
	c.mu.Unlock()
	st, err := c.store.Load(ctx)
	if err != nil {
		return err
	}
	inst, err := c.f.Inspect(ctx, st.TwinIDs())
	if err != nil {
		return err
	}
	if err := c.resolve(ctx, st, inst, mine); err != nil {
		return err
	}
	where := Where(inst)
	s, err := m.Sample(ctx, where)
	if err != nil {
		return err
	}
	if c.cfg.OnSample != nil {
		c.cfg.OnSample(s)
	}
	c.series = append(c.series, s)
	keep := c.cfg.Policy.Interval * 3
	for _, r := range c.cfg.Policy.Rules {
		keep = max(keep, r.For+3*c.cfg.Policy.Interval)
	}
	for len(c.series) > 1 && s.Time.Sub(c.series[0].Time) > keep {
		c.series = c.series[1:]
	}
	place := map[string]placement.Twin{}
	for id, t := range st.Twins {
		if at, ok := where[id]; ok {
			place[id] = placement.Twin{Host: at, Home: t.Home}
		}
	}
	ps := st.PolicyState()
	for id := range mine {
		ps.InFlight[id] = true
	}
	res, err := c.cfg.Policy.Evaluate(placement.Input{Series: c.series, Placement: place, State: ps, Now: s.Time})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, b := range res.Blocked {
		k := b.Rule + "/" + b.Twin
		seen[k] = true
		if c.blocked[k] != b.Reason {
			c.cfg.Log.Info("blocked", "rule", b.Rule, "twin", b.Twin, "on", b.From, "reason", b.Reason, "values", b.Values)
		}
		c.blocked[k] = b.Reason
	}
	for k := range c.blocked {
		if !seen[k] {
			delete(c.blocked, k)
		}
	}
	for _, d := range res.Decisions {
		c.cfg.Log.Info("decision", "rule", d.Rule, "twin", d.Twin, "from", d.From, "to", d.To, "held", d.Held, "values", d.Values, "target", d.Target)
		if c.cfg.OnDecision != nil {
			c.cfg.OnDecision(d)
		}
		c.mu.Lock()
		c.running[d.Twin] = true
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			r := c.f.execute(context.WithoutCancel(ctx), d, st.Twins[d.Twin], ExecOptions{Store: c.store, By: c.cfg.Name}, func(p Progress) {
				if !p.Done && c.cfg.OnStart != nil {
					c.cfg.OnStart(p.Decision)
				}
			})
			c.mu.Lock()
			delete(c.running, d.Twin)
			if errors.Is(r.Err, placestate.ErrFenced) && c.fenced == nil {
				c.fenced = r.Err
			}
			c.mu.Unlock()
			c.cfg.Log.Info("migration ended", "twin", r.Twin, "from", r.From, "to", r.To, "result", r.Result(), "took", r.End.Sub(r.Start), "err", r.Err)
			if c.cfg.OnMove != nil {
				c.cfg.OnMove(r)
			}
		}()
	}
	return nil
}

// resolve settles the migrations recorded in flight that this controller does not run (their
// controller was fenced or died) by what the hosts show.
func (c *Controller) resolve(ctx context.Context, st placestate.State, inst map[string][]Instance, mine map[string]bool) error {
	now := time.Now()
	for id, mv := range st.Moves {
		if !mv.InFlight() || mine[id] {
			continue
		}
		is := inst[id]
		var settled []Instance
		busy := false
		for _, i := range is {
			if i.Settled() {
				settled = append(settled, i)
			}
			busy = busy || i.Migrating || i.Uncommitted
		}
		if busy && now.Sub(mv.Started) >= c.cfg.ResolveAfter {
			// A source still frozen and labelled this long after the start: its migrator died.
			for _, i := range is {
				if i.Migrating && i.Host == mv.From && i.Status != "running" {
					what, err := c.f.Recover(ctx, id, mv.From, mv.To)
					c.cfg.Log.Info("recovered a migration another controller left", "twin", id, "from", mv.From, "to", mv.To, "by", mv.By, "did", what, "err", err)
				}
			}
		}
		if busy || len(settled) != 1 {
			continue // still moving (or recovering): in flight
		}
		at := settled[0].Host
		switch {
		case at == mv.To:
			mv.Result = "committed (observed)"
		case at == mv.From && now.Sub(mv.Started) >= c.cfg.ResolveAfter:
			mv.Result = "ended on its source (observed)"
		default:
			continue
		}
		mv.Ended = now.UTC()
		recs := []placestate.Record{placestate.MoveRecord(mv)}
		if t, ok := st.Twins[id]; ok && t.Host != at {
			t.Host = at
			recs = append(recs, placestate.TwinRecord(t))
		}
		if err := c.store.Write(ctx, recs...); err != nil {
			return err
		}
		c.cfg.Log.Info("resolved a migration another controller left in flight", "twin", id, "from", mv.From, "to", mv.To, "by", mv.By, "result", mv.Result)
	}
	return nil
}
