package fog

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/fleet"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/placement"
)

// Oscillation configures the oscillating-load run (Config.Oscillate): instead of the story
// (load, return, drain), real CPU load on fog1 switches on and off — every Fast for the
// first FastFor, then every Slow until Total — with the controller running; then the load
// stays off until fog1's twins are home (Config.PhaseTimeout) and every twin is verified.
type Oscillation struct {
	// Total is the time the load oscillates. Zero: no oscillation (the story runs).
	Total time.Duration
	// Fast is the load's on (and off) time in the fast part. Default 4s.
	Fast time.Duration
	// FastFor is how long the fast part lasts (from the start). Default Total/5.
	FastFor time.Duration
	// Slow is the load's on (and off) time after the fast part. Default 60s.
	Slow time.Duration
}

func (o *Oscillation) defaults() {
	if o.Fast == 0 {
		o.Fast = 4 * time.Second
	}
	if o.FastFor == 0 {
		o.FastFor = o.Total / 5
	}
	if o.Slow == 0 {
		o.Slow = 60 * time.Second
	}
}

// Flip is the load on fog1 switching on or off.
type Flip struct {
	Time time.Time
	On   bool
	Fast bool // in the fast part
}

// Firing is one firing of a rule: a run of the controller's decisions of that rule with no
// decision of another rule between them (a rule holding on while the budget lets its twins go
// two at a time, or retries after a rollback, are one firing).
type Firing struct {
	Rule string
	// Fired is the firing's first decision; Flip the last load flip before it (zero if none).
	Fired, Flip time.Time
	// Twins are the twins decided; Moved those whose migration committed.
	Twins, Moved []string
	// LastMoved is the end of the firing's last committed migration (zero if none committed).
	LastMoved time.Time
}

// Took is from the rule firing to the last twin of the firing moved (0 if none moved).
func (f Firing) Took() time.Duration {
	if f.LastMoved.IsZero() {
		return 0
	}
	return f.LastMoved.Sub(f.Fired)
}

// OscReport is what an oscillation showed (Analyse).
type OscReport struct {
	// Start and End are the oscillation's first flip and the end of the run's last migration
	// (or the last flip, if later).
	Start, End time.Time
	// Flips are the load's switches.
	Flips int
	// Migrations are the controller's committed migrations; RolledBack the others.
	Migrations, RolledBack int
	// PerTwin is each twin's committed migrations.
	PerTwin map[string]int
	// Firings are the rules' firings, in order.
	Firings []Firing
	// PerMinute is Migrations over the minutes from Start to End; BusyPerMinute over the
	// minutes the firings were busy (from each firing to its last twin moved); MaxPerMinute
	// the most migrations that ended within any one minute.
	PerMinute, BusyPerMinute float64
	MaxPerMinute             int
	// Flaps are twins that moved again within the cooldown (start to start, as the policy
	// counts it), or out and back within a fast flip period, or out and back both inside the
	// fast part (following the fast flips).
	Flaps []string
}

// Analyse reads a recorded run: the controller's moves (By "demo"; others are ignored), its
// decisions, the load's flips, the policy's cooldown and the fast flip period.
func Analyse(moves []Move, decisions []placement.Decision, flips []Flip, cooldown, fast time.Duration) OscReport {
	rep := OscReport{PerTwin: map[string]int{}, Flips: len(flips)}
	var fastStart, fastEnd time.Time
	for _, f := range flips {
		if rep.Start.IsZero() || f.Time.Before(rep.Start) {
			rep.Start = f.Time
		}
		if f.Time.After(rep.End) {
			rep.End = f.Time
		}
		if f.Fast {
			if fastStart.IsZero() {
				fastStart = f.Time
			}
			fastEnd = f.Time.Add(fast)
		}
	}
	var ms []Move
	for _, m := range moves {
		if m.By != "demo" {
			continue
		}
		if !committed(m) {
			rep.RolledBack++
			continue
		}
		ms = append(ms, m)
		rep.Migrations++
		rep.PerTwin[m.Twin]++
		if m.End.After(rep.End) {
			rep.End = m.End
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Start.Before(ms[j].Start) })
	rep.MaxPerMinute = perMinute(ms)
	if d := rep.End.Sub(rep.Start).Minutes(); d > 0 {
		rep.PerMinute = float64(rep.Migrations) / d
	}

	// Firings: runs of one rule in the decision log.
	ds := append([]placement.Decision(nil), decisions...)
	sort.SliceStable(ds, func(i, j int) bool { return ds[i].Time.Before(ds[j].Time) })
	of := make([]int, len(ds)) // decision → firing
	for i, d := range ds {
		if n := len(rep.Firings); n == 0 || rep.Firings[n-1].Rule != d.Rule {
			f := Firing{Rule: d.Rule, Fired: d.Time}
			for _, fl := range flips {
				if !fl.Time.After(d.Time) && fl.Time.After(f.Flip) {
					f.Flip = fl.Time
				}
			}
			rep.Firings = append(rep.Firings, f)
		}
		f := &rep.Firings[len(rep.Firings)-1]
		if !contains(f.Twins, d.Twin) {
			f.Twins = append(f.Twins, d.Twin)
		}
		of[i] = len(rep.Firings) - 1
	}
	// A committed move belongs to the firing of the latest decision of its twin and rule at or
	// before its start.
	for _, m := range ms {
		fi := -1
		for i, d := range ds {
			if d.Twin == m.Twin && d.Rule == m.Rule && !d.Time.After(m.Start) {
				fi = of[i]
			}
		}
		if fi < 0 {
			continue
		}
		f := &rep.Firings[fi]
		if !contains(f.Moved, m.Twin) {
			f.Moved = append(f.Moved, m.Twin)
		}
		if m.End.After(f.LastMoved) {
			f.LastMoved = m.End
		}
	}
	var busy time.Duration
	for _, f := range rep.Firings {
		busy += f.Took()
	}
	if busy > 0 {
		rep.BusyPerMinute = float64(rep.Migrations) / busy.Minutes()
	}

	// Flapping.
	by := map[string][]Move{}
	for _, m := range ms {
		by[m.Twin] = append(by[m.Twin], m)
	}
	inFast := func(t time.Time) bool { return !fastStart.IsZero() && !t.Before(fastStart) && t.Before(fastEnd) }
	for id, mv := range by {
		for i := 1; i < len(mv); i++ {
			a, b := mv[i-1], mv[i]
			back := b.From == a.To && b.To == a.From
			switch {
			case b.Start.Sub(a.Start) < cooldown:
				rep.Flaps = append(rep.Flaps, fmt.Sprintf("%s moved again %v after its last move began (cooldown %v)", id, b.Start.Sub(a.Start).Round(time.Millisecond), cooldown))
			case back && b.Start.Sub(a.End) < fast:
				rep.Flaps = append(rep.Flaps, fmt.Sprintf("%s went %s→%s and back within %v", id, a.From, a.To, b.Start.Sub(a.End).Round(time.Millisecond)))
			case back && inFast(a.Start) && inFast(b.Start):
				rep.Flaps = append(rep.Flaps, fmt.Sprintf("%s went %s→%s and back while the load flipped every %v", id, a.From, a.To, fast))
			}
		}
	}
	sort.Strings(rep.Flaps)
	return rep
}

func committed(m Move) bool {
	return m.Err == "" && (m.Result == migrate.Committed || m.Result == migrate.CommittedUnverified)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// oscillate switches the load on fog1 on and off as o says, recording each flip, and leaves it
// off. It stops early if ctx is done.
func oscillate(ctx context.Context, fog1 *lab.Host, procs int, o Oscillation, rec *recorder) ([]Flip, error) {
	var flips []Flip
	var load *fleet.Load
	defer func() {
		if load != nil {
			load.Stop()
		}
	}()
	start := time.Now()
	on := false
	for time.Since(start) < o.Total {
		fast := time.Since(start) < o.FastFor
		period := o.Slow
		if fast {
			period = o.Fast
		}
		on = !on
		if on {
			l, err := fleet.StartLoad(fog1, procs)
			if err != nil {
				return flips, err
			}
			load = l
		} else {
			load.Stop()
			load = nil
		}
		flips = append(flips, Flip{Time: time.Now(), On: on, Fast: fast})
		if !fast {
			rec.event("fog1 load %s (flips every %v)", map[bool]string{true: "on", false: "off"}[on], period)
		} else if len(flips) == 1 {
			rec.event("fog1 load flips on and off every %v for %v", period, o.FastFor)
		}
		// The slow part ends with the load off: the last on flip is not shortened.
		wait := period
		if left := o.Total - time.Since(start); !on && left < wait {
			wait = max(left, 0)
		}
		select {
		case <-ctx.Done():
			return flips, ctx.Err()
		case <-time.After(wait):
		}
	}
	if on {
		load.Stop()
		load = nil
		flips = append(flips, Flip{Time: time.Now(), On: false})
		rec.event("fog1 load off: the oscillation ends")
	}
	return flips, nil
}
