// Package fog runs the fog scenario (`ftwin-migrate demo --scenario fog`): a cloud host and two
// fog hosts, a dozen twins whose sensors sit at the fog sites, each twin at home; a placement
// controller (package fleet) with the fog policy. Real CPU load on fog1 makes the controller
// move fog1's twins to the cloud; when the load ends they come back; then fog2 is drained
// live. It records a timeline and the per-twin placement and latency over time (Picture
// draws them as SVG) and verifies every twin's output: 0 lost, 0 duplicated. With
// Config.Oscillate the load on fog1 instead switches on and off (fast, then slow) for a given
// time, and Analyse reports the rules' firings, the migrations and any flapping.
package fog

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/fleet"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
)

// DefaultPolicy is the fog scenario's policy.
//
//go:embed policy.yaml
var DefaultPolicy []byte

// Config describes a run.
type Config struct {
	// Lab configures the lab (its Hosts are set to cloud, fog1, fog2).
	Lab lab.Config
	// TwinBinary is the static twin executable.
	TwinBinary string
	// Twins is the number of twins, half at each fog host. Default 12.
	Twins int
	// Rate is each twin's sensor events per second. Default 20.
	Rate float64
	// Policy is the placement policy. Default DefaultPolicy.
	Policy *placement.Policy
	// HostCores is each simulated host's CPU in cores (MeasureConfig.HostCores). Default 0.5.
	HostCores float64
	// LoadProcs is the number of busy loops that load fog1. Default 2.
	LoadProcs int
	// PhaseTimeout bounds each phase (the controller's reaction, the return, the drain).
	// Default 4 minutes.
	PhaseTimeout time.Duration
	// Oscillate, when its Total is set, runs the oscillating load instead of the story.
	Oscillate Oscillation
	// Say receives the timeline as it happens (optional).
	Say func(Event)
	// Log receives the controller's log (optional).
	Log *slog.Logger
}

// Event is a line of the timeline.
type Event struct {
	Time time.Time
	What string
}

// Point is one sample of a twin: where it ran and its latency p99.
type Point struct {
	Time  time.Time
	Host  string
	P99Ms float64
}

// Move is one migration of the run.
type Move struct {
	Twin, From, To, Rule, By, Result string
	Start, End                       time.Time
	StreamGap                        time.Duration
	Err                              string
}

// Result is what the run showed.
type Result struct {
	Start, End time.Time
	Timeline   []Event
	// Series are each twin's samples; Hosts each host's CPU over time.
	Series map[string][]Point
	Hosts  map[string][]Point // P99Ms holds the host's CPU (0..1+)
	Moves  []Move
	// Reaction is from the shed rule's first decision to the last fog1 twin on the cloud;
	// Return from the first return-home decision to the last twin home; DrainTook the drain.
	Reaction, Return, DrainTook time.Duration
	// PerMinute is the most migrations ended within one minute of the run.
	PerMinute int
	// Verdicts are every twin's output checked against its sensors.
	Verdicts []fleet.TwinVerdict
	// Flaps are twins that moved again within the policy's cooldown, or more than out and back.
	Flaps []string
	// Decisions are the controller's decisions; Flips the load's switches (oscillation).
	Decisions []placement.Decision
	Flips     []Flip
	// Osc is what the oscillation showed (nil when the story ran).
	Osc *OscReport
	// Unsettled says fog1's twins were not all home after the oscillation.
	Unsettled string
}

// OK says every twin was exactly once, nothing flapped and every migration committed or
// rolled back cleanly.
func (r Result) OK() bool {
	if len(r.Verdicts) == 0 || len(r.Flaps) > 0 || r.Unsettled != "" {
		return false
	}
	for _, v := range r.Verdicts {
		if !v.OK() {
			return false
		}
	}
	for _, m := range r.Moves {
		// A rollback leaves the twin where it was, exactly once, and the rule tries again
		// after the cooldown; anything else needs a look.
		if m.Result != migrate.Committed && m.Result != migrate.CommittedUnverified && m.Result != migrate.RolledBack {
			return false
		}
	}
	return true
}

type recorder struct {
	mu  sync.Mutex
	res *Result
	say func(Event)
}

func (r *recorder) event(format string, a ...any) {
	e := Event{Time: time.Now(), What: fmt.Sprintf(format, a...)}
	r.mu.Lock()
	r.res.Timeline = append(r.res.Timeline, e)
	r.mu.Unlock()
	if r.say != nil {
		r.say(e)
	}
}

// Run runs the scenario. The lab is removed at the end, whatever happens.
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	if cfg.Twins == 0 {
		cfg.Twins = 12
	}
	if cfg.Rate == 0 {
		cfg.Rate = 20
	}
	if cfg.HostCores == 0 {
		cfg.HostCores = 0.5
	}
	if cfg.LoadProcs == 0 {
		cfg.LoadProcs = 2
	}
	if cfg.PhaseTimeout == 0 {
		cfg.PhaseTimeout = 4 * time.Minute
	}
	if cfg.Policy == nil {
		if cfg.Policy, err = placement.Parse(DefaultPolicy); err != nil {
			return res, err
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	res = Result{Start: time.Now(), Series: map[string][]Point{}, Hosts: map[string][]Point{}}
	rec := &recorder{res: &res, say: cfg.Say}
	cfg.Lab.Hosts = []string{"cloud", "fog1", "fog2"}
	var twins []placestate.Twin
	var fog1Twins []string
	for i := range cfg.Twins {
		home := []string{"fog1", "fog2"}[i%2]
		t := fleet.Spec(fmt.Sprintf("tw%02d", i), home)
		twins = append(twins, t)
		if home == "fog1" {
			fog1Twins = append(fog1Twins, t.ID)
		}
	}
	rec.event("bringing up cloud, fog1, fog2 with %d twins at their fog hosts, %.0f sensor events/s each", len(twins), cfg.Rate)
	r, err := fleet.Up(ctx, fleet.UpConfig{Lab: cfg.Lab, Twins: twins, Twin: fleet.TwinConfig{Binary: cfg.TwinBinary, StateMiB: 16, Devices: 8}, Rate: cfg.Rate,
		// A quiesce that reaches no boundary rolls back within 45 s and is retried after the
		// cooldown (seen on a loaded machine: see the README).
		Options: []fleet.Option{fleet.WithPhaseTimeout(45 * time.Second)}})
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := r.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	rec.event("every twin produces output; starting the placement controller")

	var mu sync.Mutex
	firstDecision := map[string]time.Time{}
	ctl, err := r.NewController(ctx, fleet.ControllerConfig{
		Policy: cfg.Policy, Name: "demo", Log: cfg.Log,
		Measure: fleet.MeasureConfig{HostCores: cfg.HostCores},
		OnSample: func(s placement.Sample) {
			mu.Lock()
			defer mu.Unlock()
			for id, ts := range s.Twins {
				res.Series[id] = append(res.Series[id], Point{s.Time, ts.Host, ts.P99Ms})
			}
			for h, hs := range s.Hosts {
				res.Hosts[h] = append(res.Hosts[h], Point{s.Time, h, hs.CPU})
			}
		},
		OnDecision: func(d placement.Decision) {
			mu.Lock()
			if _, ok := firstDecision[d.Rule]; !ok {
				firstDecision[d.Rule] = d.Time
			}
			res.Decisions = append(res.Decisions, d)
			mu.Unlock()
			rec.event("decision %s", d)
		},
		OnMove: func(m fleet.MoveResult) {
			mu.Lock()
			res.Moves = append(res.Moves, move(m, "demo"))
			mu.Unlock()
			rec.event("%s %s→%s %s in %v", m.Twin, m.From, m.To, m.Result(), m.End.Sub(m.Start).Round(time.Millisecond))
		},
	})
	if err != nil {
		return res, err
	}
	cctx, stopCtl := context.WithCancel(ctx)
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- ctl.Run(cctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		stopCtl()
		return <-ctlDone
	}
	defer func() { _ = stop() }()

	time.Sleep(10 * time.Second)
	fog1, _ := r.Lab.Host("fog1")
	if o := cfg.Oscillate; o.Total > 0 {
		o.defaults()
		flips, err := oscillate(ctx, fog1, cfg.LoadProcs, o, rec)
		res.Flips = flips
		if err != nil {
			return res, err
		}
		rec.event("waiting for fog1's twins to be home")
		if err := waitPlaced(ctx, r.Fleet, fog1Twins, "fog1", cfg.PhaseTimeout); err != nil {
			if ctx.Err() != nil {
				return res, err
			}
			res.Unsettled = err.Error() // still verified and reported
			rec.event("%v", err)
		}
		time.Sleep(5 * time.Second)
		if err := finish(ctx, r, &res, rec, stop, twins); err != nil {
			return res, err
		}
		mu.Lock()
		defer mu.Unlock()
		osc := Analyse(res.Moves, res.Decisions, res.Flips, cfg.Policy.Cooldown, o.Fast)
		res.Osc = &osc
		res.PerMinute, res.Flaps = osc.MaxPerMinute, osc.Flaps
		return res, nil
	}
	load, err := fleet.StartLoad(fog1, cfg.LoadProcs)
	if err != nil {
		return res, err
	}
	rec.event("fog1 loaded: %d busy loops in its cgroup", cfg.LoadProcs)
	err = waitPlaced(ctx, r.Fleet, fog1Twins, "cloud", cfg.PhaseTimeout)
	load.Stop()
	if err != nil {
		return res, err
	}
	placedAt := time.Now()
	mu.Lock()
	res.Reaction = placedAt.Sub(firstDecision["shed-hot-fog"])
	mu.Unlock()
	rec.event("fog1's %d twins run on the cloud (%v from the rule firing); the load ends", len(fog1Twins), res.Reaction.Round(time.Millisecond))
	if err := waitPlaced(ctx, r.Fleet, fog1Twins, "fog1", cfg.PhaseTimeout); err != nil {
		return res, err
	}
	mu.Lock()
	res.Return = time.Since(firstDecision["return-home"])
	mu.Unlock()
	rec.event("fog1's twins are home again (%v from the first return decision)", res.Return.Round(time.Millisecond))

	rec.event("draining fog2 (cordon, then live-migrate its twins)")
	drainStart := time.Now()
	dr, err := r.Drain(ctx, r.Store, cfg.Policy, "fog2", fleet.DrainOptions{Concurrency: cfg.Policy.Budget, Measure: fleet.MeasureConfig{HostCores: cfg.HostCores},
		Progress: func(p fleet.Progress) {
			if p.Done {
				rec.event("drain: %s %s→%s %s [%d/%d]", p.Decision.Twin, p.Decision.From, p.Decision.To, p.Result.Result(), p.Finished, p.Total)
			}
		}})
	if err != nil {
		return res, err
	}
	res.DrainTook = time.Since(drainStart)
	for _, m := range dr.Moves {
		mu.Lock()
		res.Moves = append(res.Moves, move(m, "drain"))
		mu.Unlock()
	}
	rec.event("fog2 drained in %v: %d moved, %d stayed", res.DrainTook.Round(time.Millisecond), len(dr.Moves), len(dr.Stayed))
	time.Sleep(5 * time.Second)
	if err := finish(ctx, r, &res, rec, stop, twins); err != nil {
		return res, err
	}
	res.PerMinute = perMinute(res.Moves)
	res.Flaps = flaps(res.Moves, cfg.Policy.Cooldown)
	return res, nil
}

// finish stops the controller, verifies every twin and measures the moves' stream gaps.
func finish(ctx context.Context, r *fleet.Running, res *Result, rec *recorder, stop func() error, twins []placestate.Twin) (err error) {
	if err := stop(); err != nil {
		return fmt.Errorf("fog: controller: %w", err)
	}
	rec.event("stopping the sensors and verifying every twin (read_committed)")
	if res.Verdicts, err = r.Finish(ctx); err != nil {
		return err
	}
	// Stream gaps of the controller's moves (the drain's have theirs).
	var mrs []fleet.MoveResult
	twinsByID := map[string]placestate.Twin{}
	for _, t := range twins {
		twinsByID[t.ID] = t
	}
	for _, m := range res.Moves {
		mrs = append(mrs, fleet.MoveResult{Twin: m.Twin, Start: m.Start, End: m.End})
	}
	if err := r.StreamGaps(ctx, twinsByID, mrs); err != nil {
		return err
	}
	for i := range res.Moves {
		res.Moves[i].StreamGap = mrs[i].StreamGap
	}
	res.End = time.Now()
	return nil
}

func move(m fleet.MoveResult, by string) Move {
	mv := Move{Twin: m.Twin, From: m.From, To: m.To, Rule: m.Rule, By: by, Result: m.Result(), Start: m.Start, End: m.End, StreamGap: m.StreamGap}
	if m.Err != nil {
		mv.Err = m.Err.Error()
	}
	return mv
}

func waitPlaced(ctx context.Context, f *fleet.Fleet, ids []string, host string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		where, err := f.Locate(ctx, ids)
		if err != nil {
			return err
		}
		n := 0
		for _, id := range ids {
			if where[id] == host {
				n++
			}
		}
		if n == len(ids) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fog: after %v only %d of %v run on %s (%v)", timeout, n, ids, host, where)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// perMinute is the most migrations that ended within any one minute.
func perMinute(ms []Move) int {
	ends := make([]time.Time, 0, len(ms))
	for _, m := range ms {
		if m.Err == "" {
			ends = append(ends, m.End)
		}
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
	best := 0
	for i := range ends {
		j := i
		for j < len(ends) && ends[j].Sub(ends[i]) < time.Minute {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

// flaps lists twins that moved again within cooldown of their last move by the controller,
// or more often than out and back, per phase.
func flaps(ms []Move, cooldown time.Duration) []string {
	by := map[string][]Move{}
	for _, m := range ms {
		if m.By == "demo" && m.Err == "" {
			by[m.Twin] = append(by[m.Twin], m)
		}
	}
	var out []string
	for id, mv := range by {
		sort.Slice(mv, func(i, j int) bool { return mv[i].Start.Before(mv[j].Start) })
		if len(mv) > 2 {
			out = append(out, fmt.Sprintf("%s moved %d times", id, len(mv)))
		}
		for i := 1; i < len(mv); i++ {
			if d := mv[i].Start.Sub(mv[i-1].Start); d < cooldown {
				out = append(out, fmt.Sprintf("%s moved again after %v", id, d.Round(time.Millisecond)))
			}
		}
	}
	sort.Strings(out)
	return out
}
