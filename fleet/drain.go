package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
)

// DrainOptions configure Drain.
type DrainOptions struct {
	// Concurrency is the most migrations at once. Default 2.
	Concurrency int
	// Measure configures the measurement the targets' headroom is judged on.
	Measure MeasureConfig
	// Progress receives every migration's start and end.
	Progress func(Progress)
	// Plan, when set, receives the plan before anything moves.
	Plan func(placement.Result)
}

// DrainResult is what a drain did.
type DrainResult struct {
	Host string
	// Moves are the migrations, in the plan's order (largest lag first).
	Moves []MoveResult
	// Blocked are the twins no target had headroom for: they stay on the host.
	Blocked []placement.Blocked
	// Stayed are the twins still on the host after the drain (blocked or failed to move).
	Stayed []string
}

// Drain cordons host in the store (nothing is placed there meanwhile), then live-migrates
// every twin that runs there (those the store knows, and any other running container, taken
// for a twin whose home is host) to targets the policy chooses (Policy.PlanDrain,
// its headroom judged on signals measured now), at most o.Concurrency at once, recording
// each migration in the store. A twin that cannot move stays where it is and is reported.
// The host stays cordoned: Uncordon it when it may take twins again.
func (f *Fleet) Drain(ctx context.Context, store *placestate.Store, p *placement.Policy, host string, o DrainOptions) (DrainResult, error) {
	res := DrainResult{Host: host}
	if _, err := f.Lab.Host(host); err != nil {
		return res, err
	}
	if o.Concurrency < 1 {
		o.Concurrency = 2
	}
	if err := Cordon(ctx, store, host, "drain"); err != nil {
		return res, err
	}
	st, err := store.Load(ctx)
	if err != nil {
		return res, err
	}
	// Containers the state does not know (started by hand: `lab run`) are drained too, as
	// twins at home there, with no topics to measure.
	ids, err := f.Containers(ctx, host)
	if err != nil {
		return res, err
	}
	for _, id := range ids {
		if _, ok := st.Twins[id]; !ok {
			st.Twins[id] = placestate.Twin{ID: id, Home: host, Host: host}
		}
	}
	where, err := f.Locate(ctx, st.TwinIDs())
	if err != nil {
		return res, err
	}
	place := map[string]placement.Twin{}
	for id, t := range st.Twins {
		if at, ok := where[id]; ok {
			place[id] = placement.Twin{Host: at, Home: t.Home}
		}
	}
	m, err := f.NewMeasurer(st.Twins, o.Measure)
	if err != nil {
		return res, err
	}
	defer m.Close()
	// Two samples a second apart: CPU and throughput are rates.
	if _, err := m.Sample(ctx, where); err != nil {
		return res, err
	}
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(time.Second):
	}
	s, err := m.Sample(ctx, where)
	if err != nil {
		return res, err
	}
	plan, err := p.PlanDrain(placement.Input{Series: placement.Series{s}, Placement: place, State: st.PolicyState(), Now: s.Time}, host)
	if err != nil {
		return res, err
	}
	if o.Plan != nil {
		o.Plan(plan)
	}
	res.Blocked = plan.Blocked
	res.Moves = f.Execute(ctx, plan.Decisions, st.Twins, ExecOptions{Concurrency: o.Concurrency, Store: store, By: "drain", Progress: o.Progress})
	if err := f.StreamGaps(ctx, st.Twins, res.Moves); err != nil {
		return res, err
	}
	after, err := f.Locate(ctx, st.TwinIDs())
	if err != nil {
		return res, err
	}
	for _, id := range st.TwinIDs() {
		if after[id] == host {
			res.Stayed = append(res.Stayed, id)
		}
	}
	return res, nil
}

// Cordon marks host in the store: no policy places twins there until Uncordon.
func Cordon(ctx context.Context, store *placestate.Store, host, reason string) error {
	if err := store.Write(ctx, placestate.CordonRecord(placestate.Cordon{Host: host, Since: time.Now().UTC(), Reason: reason})); err != nil {
		return fmt.Errorf("fleet: cordon %s: %w", host, err)
	}
	return nil
}

// Uncordon lets host take twins again.
func Uncordon(ctx context.Context, store *placestate.Store, host string) error {
	if err := store.Write(ctx, placestate.UncordonRecord(host)); err != nil {
		return fmt.Errorf("fleet: uncordon %s: %w", host, err)
	}
	return nil
}

// Register records the twins in the store (their homes and topics), where drain and the
// controller find them.
func Register(ctx context.Context, store *placestate.Store, twins ...placestate.Twin) error {
	recs := make([]placestate.Record, len(twins))
	for i, t := range twins {
		recs[i] = placestate.TwinRecord(t)
	}
	if err := store.Write(ctx, recs...); err != nil {
		return fmt.Errorf("fleet: register twins: %w", err)
	}
	return nil
}
