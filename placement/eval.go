package placement

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// TwinSignals are what is measured of a twin.
type TwinSignals struct {
	// P99Ms is the p99 event latency over the measuring window, sensor timestamp to committed
	// output, in milliseconds.
	P99Ms float64 `json:"p99_ms"`
	// Lag is the twin's consumer lag: records of its input past its group's committed offsets.
	Lag int64 `json:"lag"`
	// CPU is the twin's CPU use as a fraction of its host's (the same unit as HostSignals.CPU).
	CPU float64 `json:"cpu"`
	// MemMiB is the twin's memory use.
	MemMiB float64 `json:"mem_mib"`
	// Rate is the twin's committed outputs per second.
	Rate float64 `json:"rate"`
}

// HostSignals are what is measured of a host.
type HostSignals struct {
	// CPU is the host's CPU use, 0 to 1 of what it has.
	CPU float64 `json:"cpu"`
	// Mem is the host's memory use, 0 to 1 of its limit.
	Mem float64 `json:"mem"`
	// PSICPU is the share of time some task waited for CPU (PSI some avg10, 0 to 1), or -1 where
	// the kernel offers no PSI.
	PSICPU float64 `json:"psi_cpu"`
	// UplinkMbps is the host link's throughput, both directions, in Mbit/s.
	UplinkMbps float64 `json:"uplink_mbps"`
}

// TwinSample is a twin in a sample: where it ran and what it measured.
type TwinSample struct {
	Host string `json:"host"`
	TwinSignals
}

// Sample is one round of measurements.
type Sample struct {
	Time  time.Time              `json:"time"`
	Twins map[string]TwinSample  `json:"twins"`
	Hosts map[string]HostSignals `json:"hosts"`
}

// Series is a recording of samples, oldest first.
type Series []Sample

// Twin is a twin's place: where it runs and where its sensors are.
type Twin struct {
	Host string `json:"host"`
	// Home is the (fog) host its sensors are at.
	Home string `json:"home"`
}

// State is what the controller remembers between evaluations.
type State struct {
	// LastMove is when each twin's last migration (committed or not) started.
	LastMove map[string]time.Time `json:"last_move,omitempty"`
	// InFlight are the twins migrating now; they count against the budget and are not moved again.
	InFlight map[string]bool `json:"in_flight,omitempty"`
	// Cordoned hosts take no twins.
	Cordoned map[string]bool `json:"cordoned,omitempty"`
}

// Input is what an evaluation sees.
type Input struct {
	Series    Series
	Placement map[string]Twin
	State     State
	Now       time.Time
}

// HostView is a host as expressions see it.
type HostView struct {
	Name       string  `expr:"name"`
	Role       string  `expr:"role"`
	CPU        float64 `expr:"cpu"`
	Mem        float64 `expr:"mem"`
	PSICPU     float64 `expr:"psi_cpu"`
	UplinkMbps float64 `expr:"uplink_mbps"`
	// Twins is the number of twins placed on it; Capacity the policy's (math.MaxInt32 for none).
	Twins    int  `expr:"twins"`
	Capacity int  `expr:"capacity"`
	Cordoned bool `expr:"cordoned"`
}

// TwinView is a twin as expressions see it.
type TwinView struct {
	ID     string  `expr:"id"`
	Host   string  `expr:"host"`
	Home   string  `expr:"home"`
	P99Ms  float64 `expr:"p99_ms"`
	Lag    float64 `expr:"lag"`
	CPU    float64 `expr:"cpu"`
	MemMiB float64 `expr:"mem_mib"`
	Rate   float64 `expr:"rate"`
}

// Env is the environment of every expression.
type Env struct {
	Twin TwinView `expr:"twin"`
	Host HostView `expr:"host"`
	Home HostView `expr:"home"`
}

// Decision is a migration the policy asks for.
type Decision struct {
	Time time.Time `json:"time"`
	// Rule is the rule that fired ("drain" for a drain).
	Rule     string `json:"rule"`
	Twin     string `json:"twin"`
	From, To string
	// Held is how long the rule's condition had held when it fired.
	Held time.Duration `json:"held"`
	// Values are the figures the rule's condition read, at the last sample ("twin.p99_ms").
	Values map[string]float64 `json:"values,omitempty"`
	// Target says why the target was chosen (its headroom figures, projected).
	Target string `json:"target"`
}

func (d Decision) String() string {
	return fmt.Sprintf("%s: move %s %s→%s (held %v; %s; target %s)", d.Rule, d.Twin, d.From, d.To, d.Held.Round(time.Millisecond), formatValues(d.Values), d.Target)
}

// Blocked is a twin a rule would have moved, and why it did not.
type Blocked struct {
	Time   time.Time          `json:"time"`
	Rule   string             `json:"rule"`
	Twin   string             `json:"twin"`
	From   string             `json:"from"`
	Values map[string]float64 `json:"values,omitempty"`
	Reason string             `json:"reason"`
}

func (b Blocked) String() string {
	return fmt.Sprintf("%s: %s stays on %s: %s (%s)", b.Rule, b.Twin, b.From, b.Reason, formatValues(b.Values))
}

func formatValues(v map[string]float64) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%.4g", k, v[k])
	}
	return strings.Join(parts, " ")
}

// Result is an evaluation's outcome.
type Result struct {
	Decisions []Decision `json:"decisions"`
	Blocked   []Blocked  `json:"blocked,omitempty"`
}

// maxGap is the longest interval between samples a condition holds across: a longer gap in the
// recording (the controller was down, a measurement failed) restarts the hold.
func (p *Policy) maxGap() time.Duration { return 3 * p.Interval }

// Evaluate runs the rules over the input and returns the migrations to start now. It is a
// pure function of in: the same input gives the same decisions.
//
// A rule fires for a twin (a host) when its condition held at every sample from at least For
// before in.Now up to the latest sample, with no gap between samples longer than three
// intervals, the latest no older than three intervals, and — for a twin rule — the twin on
// the host it is on now at every one of them (figures measured elsewhere do not count).
// A firing rule moves its twin unless the twin is in flight or in its cooldown, the budget is
// spent, or no target has headroom; such twins are listed in Blocked. Rules go in order; a
// twin gets one decision at most. A host rule sheds its host's twins by its order expression,
// largest first, while its condition, projected without the twins already shed, still holds.
func (p *Policy) Evaluate(in Input) (Result, error) {
	var res Result
	pl := newPlan(p, in)
	if pl.last == nil {
		return res, nil
	}
	budget := p.Budget - len(in.State.InFlight)
	for _, r := range p.Rules {
		switch r.Scope {
		case ScopeTwin:
			type firing struct {
				id   string
				held time.Duration
				vals map[string]float64
			}
			var fs []firing
			for _, id := range pl.twinIDs() {
				held, vals, ok, err := pl.held(r, id, "")
				if err != nil {
					return res, err
				}
				if ok {
					fs = append(fs, firing{id, held, vals})
				}
			}
			sort.SliceStable(fs, func(i, j int) bool { return fs[i].held > fs[j].held })
			moved := 0
			for _, f := range fs {
				if r.MaxPerRound > 0 && moved >= r.MaxPerRound {
					break
				}
				if d, ok := pl.move(r, f.id, f.held, f.vals, &budget, &res); ok {
					res.Decisions = append(res.Decisions, d)
					moved++
				}
			}
		case ScopeHost:
			for _, h := range pl.hostNames() {
				held, vals, ok, err := pl.held(r, "", h)
				if err != nil {
					return res, err
				}
				if !ok {
					continue
				}
				ids, err := pl.shedOrder(r, h)
				if err != nil {
					return res, err
				}
				moved := 0
				for _, id := range ids {
					if r.MaxPerRound > 0 && moved >= r.MaxPerRound {
						break
					}
					still, err := pl.hostHolds(r, h)
					if err != nil {
						return res, err
					}
					if !still {
						break
					}
					if d, ok := pl.move(r, id, held, vals, &budget, &res); ok {
						res.Decisions = append(res.Decisions, d)
						moved++
					}
				}
			}
		}
	}
	return res, nil
}

// PlanDrain chooses a target for every twin on host, as Policy.Drain prefers, each with
// headroom (projected with the twins placed before it, largest lag first): the drained host
// and cordoned hosts take none. Cooldowns and the budget do not apply (the drain has its own
// concurrency limit). Twins without a target are in Blocked.
func (p *Policy) PlanDrain(in Input, host string) (Result, error) {
	var res Result
	in.State.Cordoned = withKey(in.State.Cordoned, host)
	pl := newPlan(p, in)
	if pl.last == nil {
		return res, fmt.Errorf("placement: drain %s: no signals measured yet", host)
	}
	var ids []string
	for _, id := range pl.twinIDs() {
		if pl.place[id].Host == host {
			ids = append(ids, id)
		}
	}
	sort.SliceStable(ids, func(i, j int) bool { return pl.twin(ids[i]).Lag > pl.twin(ids[j]).Lag })
	r := &Rule{Name: "drain", To: p.Drain}
	unlimited := math.MaxInt
	for _, id := range ids {
		vals := map[string]float64{"twin.lag": float64(pl.twin(id).Lag), "twin.p99_ms": pl.twin(id).P99Ms}
		if d, ok := pl.move(r, id, 0, vals, &unlimited, &res); ok {
			d.Held = 0
			res.Decisions = append(res.Decisions, d)
		}
	}
	return res, nil
}

func withKey(m map[string]bool, k string) map[string]bool {
	out := map[string]bool{k: true}
	for key, v := range m {
		out[key] = v
	}
	return out
}

// plan is one evaluation: the input, and the hosts' figures projected with the moves decided so far.
type plan struct {
	p     *Policy
	in    Input
	last  *Sample
	place map[string]Twin
	hosts map[string]*HostView // projected, from the last sample
	done  map[string]bool      // twins decided this round
}

func newPlan(p *Policy, in Input) *plan {
	pl := &plan{p: p, in: in, place: map[string]Twin{}, hosts: map[string]*HostView{}, done: map[string]bool{}}
	for i := len(in.Series) - 1; i >= 0; i-- {
		if !in.Series[i].Time.After(in.Now) {
			if in.Now.Sub(in.Series[i].Time) <= p.maxGap() {
				pl.last = &in.Series[i]
			}
			break
		}
	}
	for id, t := range in.Placement {
		pl.place[id] = t
	}
	if pl.last == nil {
		return pl
	}
	for name, hs := range p.Hosts {
		sig, ok := pl.last.Hosts[name]
		if !ok {
			continue // not measured: no headroom known, never a target
		}
		pl.hosts[name] = pl.view(name, hs, sig, in.Placement)
	}
	return pl
}

func (pl *plan) view(name string, hs HostSpec, sig HostSignals, place map[string]Twin) *HostView {
	v := &HostView{Name: name, Role: hs.Role, CPU: sig.CPU, Mem: sig.Mem, PSICPU: sig.PSICPU, UplinkMbps: sig.UplinkMbps,
		Capacity: hs.Capacity, Cordoned: pl.in.State.Cordoned[name]}
	if v.Capacity == 0 {
		v.Capacity = math.MaxInt32
	}
	for _, t := range place {
		if t.Host == name {
			v.Twins++
		}
	}
	return v
}

func (pl *plan) twinIDs() []string {
	ids := make([]string, 0, len(pl.place))
	for id := range pl.place {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (pl *plan) hostNames() []string {
	hs := make([]string, 0, len(pl.hosts))
	for h := range pl.hosts {
		hs = append(hs, h)
	}
	sort.Strings(hs)
	return hs
}

// twin is the twin's figures at the last sample (zero if it was not measured).
func (pl *plan) twin(id string) TwinSignals { return pl.last.Twins[id].TwinSignals }

func twinView(id string, t Twin, s TwinSignals) TwinView {
	return TwinView{ID: id, Host: t.Host, Home: t.Home, P99Ms: s.P99Ms, Lag: float64(s.Lag), CPU: s.CPU, MemMiB: s.MemMiB, Rate: s.Rate}
}

// env is the environment of sample s for twin id (or, id empty, for host).
func (pl *plan) env(s *Sample, id, host string) (Env, bool) {
	var e Env
	if id != "" {
		ts, ok := s.Twins[id]
		t := pl.place[id]
		if !ok || ts.Host != t.Host {
			return e, false
		}
		e.Twin = twinView(id, t, ts.TwinSignals)
		host = t.Host
		if hs, ok := pl.p.Hosts[t.Home]; ok {
			if sig, ok := s.Hosts[t.Home]; ok {
				e.Home = *pl.view(t.Home, hs, sig, pl.place)
			}
		}
	}
	hs, ok := pl.p.Hosts[host]
	if !ok {
		return e, id != "" // a twin on a host the policy does not know is still judged on its own figures
	}
	sig, ok := s.Hosts[host]
	if !ok {
		return e, id != ""
	}
	e.Host = *pl.view(host, hs, sig, pl.place)
	return e, true
}

// held says whether r's condition holds for twin id (or host) over its For, how long it has,
// and the figures it read at the last sample.
func (pl *plan) held(r *Rule, id, host string) (time.Duration, map[string]float64, bool, error) {
	series := pl.in.Series
	end := -1
	for i := len(series) - 1; i >= 0; i-- {
		if &series[i] == pl.last {
			end = i
			break
		}
	}
	var since time.Time
	var vals map[string]float64
	next := time.Time{}
	for i := end; i >= 0; i-- {
		s := &series[i]
		if !next.IsZero() && next.Sub(s.Time) > pl.p.maxGap() {
			break
		}
		e, ok := pl.env(s, id, host)
		if !ok {
			break
		}
		hold, err := run(r.when, e)
		if err != nil {
			return 0, nil, false, fmt.Errorf("placement: rule %s: %w", r.Name, err)
		}
		if !hold {
			break
		}
		if i == end {
			vals = values(r.refs, e)
		}
		since, next = s.Time, s.Time
		if pl.in.Now.Sub(since) >= r.For {
			return pl.in.Now.Sub(since), vals, true, nil
		}
	}
	return 0, nil, false, nil
}

// hostHolds evaluates a host rule's condition on the host's projected figures.
func (pl *plan) hostHolds(r *Rule, host string) (bool, error) {
	v, ok := pl.hosts[host]
	if !ok {
		return false, nil
	}
	return run(r.when, Env{Host: *v})
}

func (pl *plan) shedOrder(r *Rule, host string) ([]string, error) {
	type keyed struct {
		id  string
		key float64
	}
	var ks []keyed
	for _, id := range pl.twinIDs() {
		t := pl.place[id]
		if t.Host != host {
			continue
		}
		out, err := expr.Run(r.order, Env{Twin: twinView(id, t, pl.twin(id)), Host: *pl.hosts[host]})
		if err != nil {
			return nil, fmt.Errorf("placement: rule %s: order: %w", r.Name, err)
		}
		ks = append(ks, keyed{id, out.(float64)})
	}
	sort.SliceStable(ks, func(i, j int) bool { return ks[i].key > ks[j].key })
	ids := make([]string, len(ks))
	for i, k := range ks {
		ids[i] = k.id
	}
	return ids, nil
}

// move decides twin id's migration by rule r, or records why not.
func (pl *plan) move(r *Rule, id string, held time.Duration, vals map[string]float64, budget *int, res *Result) (Decision, bool) {
	t := pl.place[id]
	block := func(reason string) (Decision, bool) {
		res.Blocked = append(res.Blocked, Blocked{Time: pl.in.Now, Rule: r.Name, Twin: id, From: t.Host, Values: vals, Reason: reason})
		return Decision{}, false
	}
	switch {
	case pl.done[id]:
		return Decision{}, false // an earlier rule moved it this round
	case pl.in.State.InFlight[id]:
		return block("migrating already")
	case r.Name != "drain" && pl.in.Now.Sub(pl.in.State.LastMove[id]) < pl.p.Cooldown && !pl.in.State.LastMove[id].IsZero():
		return block(fmt.Sprintf("cooldown: moved %v ago, cooldown %v", pl.in.Now.Sub(pl.in.State.LastMove[id]).Round(time.Second), pl.p.Cooldown))
	case *budget <= 0:
		return block(fmt.Sprintf("budget: %d migrations in flight or decided", pl.p.Budget))
	}
	to, why, err := pl.target(r.To, id)
	if err != nil {
		return block(err.Error())
	}
	if to == "" {
		return block("no target with headroom: " + why)
	}
	*budget--
	pl.done[id] = true
	tw := pl.twin(id)
	if from := pl.hosts[t.Host]; from != nil {
		from.Twins--
		from.CPU -= tw.CPU
	}
	dst := pl.hosts[to]
	dst.Twins++
	dst.CPU += tw.CPU
	t.Host = to
	pl.place[id] = t
	return Decision{Time: pl.in.Now, Rule: r.Name, Twin: id, From: pl.in.Placement[id].Host, To: to, Held: held, Values: vals, Target: why}, true
}

// target picks the first of to that has headroom for twin id. It returns "" and the reasons
// every candidate was refused when none has.
func (pl *plan) target(to []string, id string) (string, string, error) {
	t := pl.place[id]
	var refused []string
	tw := twinView(id, t, pl.twin(id))
	for _, cand := range to {
		var hosts []string
		switch {
		case cand == Home:
			hosts = []string{t.Home}
		case pl.p.Hosts[cand].Role != "":
			hosts = []string{cand}
		default:
			hosts = pl.p.hostsOfRole(cand)
			// the role's least loaded host first
			sort.SliceStable(hosts, func(i, j int) bool {
				a, b := pl.hosts[hosts[i]], pl.hosts[hosts[j]]
				if a == nil || b == nil {
					return b == nil && a != nil
				}
				return a.CPU < b.CPU
			})
		}
		for _, h := range hosts {
			v, ok := pl.hosts[h]
			switch {
			case h == t.Host:
				continue
			case h == "" || pl.p.Hosts[h].Role == "":
				refused = append(refused, fmt.Sprintf("%s: not a host of the policy", cand))
				continue
			case !ok:
				refused = append(refused, h+": not measured")
				continue
			case v.Cordoned:
				refused = append(refused, h+": cordoned")
				continue
			}
			proj := *v
			proj.Twins++
			proj.CPU += tw.CPU
			ok, err := run(pl.p.headroom, Env{Twin: tw, Host: proj})
			if err != nil {
				return "", "", fmt.Errorf("placement: headroom: %w", err)
			}
			fig := fmt.Sprintf("%s: cpu %.2f mem %.2f twins %d/%s", h, proj.CPU, proj.Mem, proj.Twins, capacity(proj.Capacity))
			if ok {
				return h, fig + " (projected)", nil
			}
			refused = append(refused, fig+" projected, no headroom")
		}
	}
	return "", strings.Join(refused, "; "), nil
}

func capacity(c int) string {
	if c == math.MaxInt32 {
		return "∞"
	}
	return fmt.Sprint(c)
}

func run(p *vm.Program, e Env) (bool, error) {
	out, err := expr.Run(p, e)
	if err != nil {
		return false, err
	}
	return out.(bool), nil
}

// values reads the referenced fields ("twin.p99_ms") of e that are numbers.
func values(refs []string, e Env) map[string]float64 {
	m := map[string]float64{}
	for _, ref := range refs {
		obj, field, _ := strings.Cut(ref, ".")
		var f map[string]float64
		switch obj {
		case "twin":
			f = map[string]float64{"p99_ms": e.Twin.P99Ms, "lag": e.Twin.Lag, "cpu": e.Twin.CPU, "mem_mib": e.Twin.MemMiB, "rate": e.Twin.Rate}
		case "host", "home":
			v := e.Host
			if obj == "home" {
				v = e.Home
			}
			f = map[string]float64{"cpu": v.CPU, "mem": v.Mem, "psi_cpu": v.PSICPU, "uplink_mbps": v.UplinkMbps, "twins": float64(v.Twins), "capacity": float64(v.Capacity)}
		}
		if x, ok := f[field]; ok {
			m[ref] = x
		}
	}
	return m
}
