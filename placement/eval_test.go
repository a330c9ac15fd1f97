package placement

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

const basePolicy = `
interval: 1s
budget: 2
cooldown: 60s
hosts:
  cloud: {role: cloud}
  fog1: {role: fog, capacity: 3}
  fog2: {role: fog}
headroom: "host.cpu < 0.7 && host.twins <= host.capacity"
rules:
  - name: latency-home
    scope: twin
    when: "twin.host != twin.home && twin.p99_ms > 200"
    for: 30s
    to: [home]
  - name: shed-hot-fog
    scope: host
    when: "host.role == 'fog' && host.cpu > 0.85"
    for: 30s
    to: [cloud]
    order: "twin.lag"
`

func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// world builds samples: every second from t0 for n seconds, figures from f.
type world struct {
	place map[string]Twin
	hosts map[string]HostSignals
	twins map[string]TwinSignals
}

func newWorld() *world {
	return &world{place: map[string]Twin{}, twins: map[string]TwinSignals{},
		hosts: map[string]HostSignals{"cloud": {CPU: 0.2}, "fog1": {CPU: 0.3}, "fog2": {CPU: 0.3}}}
}

func (w *world) sample(at time.Time) Sample {
	s := Sample{Time: at, Twins: map[string]TwinSample{}, Hosts: map[string]HostSignals{}}
	for id, t := range w.place {
		s.Twins[id] = TwinSample{Host: t.Host, TwinSignals: w.twins[id]}
	}
	for h, v := range w.hosts {
		s.Hosts[h] = v
	}
	return s
}

// record appends a sample a second from start to start+d (inclusive), calling edit before each.
func (w *world) record(series Series, start time.Time, d time.Duration, edit func(at time.Duration)) Series {
	for at := time.Duration(0); at <= d; at += time.Second {
		if edit != nil {
			edit(at)
		}
		series = append(series, w.sample(start.Add(at)))
	}
	return series
}

func (w *world) input(series Series, st State) Input {
	return Input{Series: series, Placement: w.place, State: st, Now: series[len(series)-1].Time}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ src, want string }{
		"unknown field":  {"hosts: {cloud: {role: cloud}}\nbudgit: 2\n", "budgit"},
		"unknown signal": {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, when: 'twin.p99 > 1', to: [cloud]}]\n", "rule a: when"},
		"not a boolean":  {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, when: 'twin.p99_ms', to: [cloud]}]\n", "rule a: when"},
		"bad target":     {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, when: 'true', to: [mars]}]\n", `target "mars"`},
		"no target":      {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, when: 'true'}]\n", "no to"},
		"duplicate rule": {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, when: 'true', to: [cloud]}, {name: a, when: 'true', to: [cloud]}]\n", "unique"},
		"bad scope":      {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, scope: pod, when: 'true', to: [cloud]}]\n", "scope"},
		"bad duration":   {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, for: soon, when: 'true', to: [cloud]}]\n", "soon"},
		"order on twin":  {"hosts: {cloud: {role: cloud}}\nrules: [{name: a, when: 'true', to: [cloud], order: twin.lag}]\n", "order is for host rules"},
		"bad headroom":   {"hosts: {cloud: {role: cloud}}\nheadroom: 'host.cpu <'\n", "headroom"},
		"no hosts":       {"rules: []\n", "no hosts"},
		"zero budget":    {"hosts: {cloud: {role: cloud}}\nbudget: 0\n", "budget"},
		"host no role":   {"hosts: {cloud: {capacity: 2}}\n", "role"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseExample(t *testing.T) {
	p, err := Load("testdata/fog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p.Interval != time.Second || p.Budget != 2 || p.Cooldown != 20*time.Second || len(p.Rules) != 3 {
		t.Fatalf("policy %+v", p)
	}
	if r := p.Rules[0]; r.Scope != ScopeHost || r.For != 5*time.Second || !reflect.DeepEqual(r.refs, []string{"host.cpu", "host.role"}) {
		t.Errorf("rule 0: %+v", r)
	}
	if !reflect.DeepEqual(p.Drain, []string{"home", "cloud"}) {
		t.Errorf("drain %v", p.Drain)
	}
}

// A twin away from home with high latency: the rule fires only once the condition has held
// for 30 s, and carries the rule and the figures.
func TestHysteresis(t *testing.T) {
	p := mustParse(t, basePolicy)
	w := newWorld()
	w.place["tw1"] = Twin{Host: "cloud", Home: "fog1"}
	w.twins["tw1"] = TwinSignals{P99Ms: 250, Lag: 7}
	var s Series
	s = w.record(s, t0, 29*time.Second, nil)
	res, err := p.Evaluate(w.input(s, State{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Decisions) != 0 {
		t.Fatalf("fired after 29 s: %v", res.Decisions)
	}
	s = w.record(s, t0.Add(30*time.Second), 0, nil)
	res, _ = p.Evaluate(w.input(s, State{}))
	if len(res.Decisions) != 1 {
		t.Fatalf("did not fire after 30 s: %+v", res)
	}
	d := res.Decisions[0]
	if d.Rule != "latency-home" || d.Twin != "tw1" || d.From != "cloud" || d.To != "fog1" || d.Held != 30*time.Second ||
		d.Values["twin.p99_ms"] != 250 || len(d.Values) != 1 || !strings.Contains(d.Target, "fog1: cpu") {
		t.Errorf("decision %+v", d)
	}
	t.Log(d)
}

// One sample below the threshold inside the window restarts the hold; so does a gap in the
// recording and a sample from another host.
func TestHysteresisRestarts(t *testing.T) {
	p := mustParse(t, basePolicy)
	for name, edit := range map[string]func(w *world, s Series) Series{
		"dip": func(w *world, s Series) Series {
			s[20].Twins["tw1"] = TwinSample{Host: "cloud", TwinSignals: TwinSignals{P99Ms: 150}}
			return s
		},
		"gap": func(w *world, s Series) Series { return append(append(Series{}, s[:15]...), s[19:]...) },
		"elsewhere": func(w *world, s Series) Series {
			s[20].Twins["tw1"] = TwinSample{Host: "fog2", TwinSignals: TwinSignals{P99Ms: 300}}
			return s
		},
		"stale": func(w *world, s Series) Series { return s[:len(s)-5] },
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld()
			w.place["tw1"] = Twin{Host: "cloud", Home: "fog1"}
			w.twins["tw1"] = TwinSignals{P99Ms: 250}
			s := edit(w, w.record(nil, t0, 40*time.Second, nil))
			in := w.input(s, State{})
			in.Now = t0.Add(40 * time.Second)
			res, err := p.Evaluate(in)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Decisions) != 0 {
				t.Fatalf("fired: %v", res.Decisions)
			}
		})
	}
}

func TestCooldown(t *testing.T) {
	p := mustParse(t, basePolicy)
	w := newWorld()
	w.place["tw1"] = Twin{Host: "cloud", Home: "fog1"}
	w.twins["tw1"] = TwinSignals{P99Ms: 250}
	s := w.record(nil, t0, 40*time.Second, nil)
	st := State{LastMove: map[string]time.Time{"tw1": t0.Add(-15 * time.Second)}} // 55 s before now
	res, _ := p.Evaluate(w.input(s, st))
	if len(res.Decisions) != 0 || len(res.Blocked) != 1 || !strings.HasPrefix(res.Blocked[0].Reason, "cooldown") {
		t.Fatalf("in its cooldown: %+v", res)
	}
	st.LastMove["tw1"] = t0.Add(-20 * time.Second) // 60 s before now: over
	res, _ = p.Evaluate(w.input(s, st))
	if len(res.Decisions) != 1 {
		t.Fatalf("after its cooldown: %+v", res)
	}
}

func TestBudget(t *testing.T) {
	p := mustParse(t, basePolicy)
	w := newWorld()
	for i := range 5 {
		id := fmt.Sprintf("tw%d", i)
		w.place[id] = Twin{Host: "cloud", Home: "fog2"}
		w.twins[id] = TwinSignals{P99Ms: 300}
	}
	s := w.record(nil, t0, 30*time.Second, nil)
	res, _ := p.Evaluate(w.input(s, State{InFlight: map[string]bool{"tw0": true}}))
	if len(res.Decisions) != 1 {
		t.Fatalf("budget 2 with one in flight: %d decisions: %v", len(res.Decisions), res.Decisions)
	}
	reasons := map[string]int{}
	for _, b := range res.Blocked {
		reasons[strings.SplitN(b.Reason, ":", 2)[0]]++
	}
	if reasons["migrating already"] != 1 || reasons["budget"] != 3 {
		t.Errorf("blocked: %v", res.Blocked)
	}
}

// Headroom is checked on the target's figures projected with the twin (and the twins placed
// before it this round): fog1 (capacity 3) holds one twin, so two more fit.
func TestHeadroom(t *testing.T) {
	p := mustParse(t, strings.Replace(basePolicy, "budget: 2", "budget: 10", 1))
	w := newWorld()
	w.place["local"] = Twin{Host: "fog1", Home: "fog1"}
	for i := range 4 {
		id := fmt.Sprintf("tw%d", i)
		w.place[id] = Twin{Host: "cloud", Home: "fog1"}
		w.twins[id] = TwinSignals{P99Ms: 300, CPU: 0.05}
	}
	s := w.record(nil, t0, 30*time.Second, nil)
	res, _ := p.Evaluate(w.input(s, State{}))
	if len(res.Decisions) != 2 || len(res.Blocked) != 2 || !strings.Contains(res.Blocked[0].Reason, "no target with headroom: fog1: cpu 0.45 mem 0.00 twins 4/3") {
		t.Fatalf("capacity 3: %+v", res)
	}
	// A hot home takes none.
	w.hosts["fog1"] = HostSignals{CPU: 0.68}
	s = w.record(nil, t0, 30*time.Second, nil)
	res, _ = p.Evaluate(w.input(s, State{}))
	if len(res.Decisions) != 0 || len(res.Blocked) != 4 {
		t.Fatalf("hot home: %+v", res)
	}
	// A cordoned one neither.
	w.hosts["fog1"] = HostSignals{CPU: 0.1}
	s = w.record(nil, t0, 30*time.Second, nil)
	res, _ = p.Evaluate(w.input(s, State{Cordoned: map[string]bool{"fog1": true}}))
	if len(res.Decisions) != 0 || !strings.Contains(res.Blocked[0].Reason, "fog1: cordoned") {
		t.Fatalf("cordoned home: %+v", res)
	}
}

// A hot fog host sheds its twins to the cloud, largest lag first, while its projected CPU is
// still above the threshold.
func TestShedLargestLagFirst(t *testing.T) {
	p := mustParse(t, strings.Replace(basePolicy, "budget: 2", "budget: 10", 1))
	w := newWorld()
	for i, lag := range []int64{5, 50, 500, 20} {
		id := fmt.Sprintf("tw%d", i)
		w.place[id] = Twin{Host: "fog1", Home: "fog1"}
		w.twins[id] = TwinSignals{Lag: lag, CPU: 0.03}
	}
	w.hosts["fog1"] = HostSignals{CPU: 0.92}
	s := w.record(nil, t0, 30*time.Second, nil)
	res, err := p.Evaluate(w.input(s, State{}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range res.Decisions {
		got = append(got, d.Twin)
		if d.To != "cloud" || d.Rule != "shed-hot-fog" || d.Values["host.cpu"] != 0.92 {
			t.Errorf("decision %+v", d)
		}
	}
	// 0.92 → 0.89 → 0.86 → 0.83: three twins shed, by lag 500, 50, 20.
	if !reflect.DeepEqual(got, []string{"tw2", "tw1", "tw3"}) {
		t.Errorf("shed %v, want tw2 tw1 tw3", got)
	}
	// Its max_per_round and the budget limit it too.
	p.Budget = 1
	res, _ = p.Evaluate(w.input(s, State{}))
	if len(res.Decisions) != 1 || res.Decisions[0].Twin != "tw2" {
		t.Errorf("budget 1: %v", res.Decisions)
	}
}

// A role target takes the role's least loaded host with headroom.
func TestRoleTarget(t *testing.T) {
	p := mustParse(t, `
hosts: {cloud1: {role: cloud}, cloud2: {role: cloud}, fog: {role: fog}}
rules: [{name: go-cloud, when: "twin.lag > 100", to: [cloud]}]
`)
	w := newWorld()
	w.hosts = map[string]HostSignals{"cloud1": {CPU: 0.5}, "cloud2": {CPU: 0.2}, "fog": {CPU: 0.3}}
	w.place["a"] = Twin{Host: "fog", Home: "fog"}
	w.twins["a"] = TwinSignals{Lag: 1000}
	s := w.record(nil, t0, 0, nil)
	res, _ := p.Evaluate(w.input(s, State{}))
	if len(res.Decisions) != 1 || res.Decisions[0].To != "cloud2" {
		t.Fatalf("%+v", res)
	}
	res, _ = p.Evaluate(w.input(s, State{Cordoned: map[string]bool{"cloud2": true}}))
	if len(res.Decisions) != 1 || res.Decisions[0].To != "cloud1" {
		t.Fatalf("cloud2 cordoned: %+v", res)
	}
}

func TestPlanDrain(t *testing.T) {
	p := mustParse(t, strings.Replace(basePolicy, "rules:", "drain: [home, cloud]\nrules:", 1))
	w := newWorld()
	w.place["a"] = Twin{Host: "fog2", Home: "fog1"} // goes home
	w.place["b"] = Twin{Host: "fog2", Home: "fog2"} // home is drained: cloud
	w.place["c"] = Twin{Host: "fog2", Home: "fog1"}
	w.place["d"] = Twin{Host: "cloud", Home: "fog2"} // not on fog2
	w.twins["a"] = TwinSignals{Lag: 10}
	w.twins["c"] = TwinSignals{Lag: 30}
	s := w.record(nil, t0, 2*time.Second, nil)
	st := State{LastMove: map[string]time.Time{"a": t0}} // cooldowns do not hold a drain
	res, err := p.PlanDrain(w.input(s, st), "fog2")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var order []string
	for _, d := range res.Decisions {
		got[d.Twin] = d.To
		order = append(order, d.Twin)
	}
	if !reflect.DeepEqual(got, map[string]string{"a": "fog1", "b": "cloud", "c": "fog1"}) || order[0] != "c" {
		t.Fatalf("drain: %v (order %v), blocked %v", got, order, res.Blocked)
	}
	// With the cloud cordoned and fog1 full, nothing can take b: it stays, reported.
	w.place["x"] = Twin{Host: "fog1", Home: "fog1"}
	w.place["y"] = Twin{Host: "fog1", Home: "fog1"}
	s = w.record(nil, t0, 2*time.Second, nil)
	res, _ = p.PlanDrain(w.input(s, State{Cordoned: map[string]bool{"cloud": true}}), "fog2")
	got = map[string]string{}
	for _, d := range res.Decisions {
		got[d.Twin] = d.To
	}
	if len(res.Decisions) != 1 || len(res.Blocked) != 2 {
		t.Fatalf("drain with the cloud cordoned: %v, blocked %v", got, res.Blocked)
	}
	for _, b := range res.Blocked {
		if !strings.Contains(b.Reason, "cloud: cordoned") {
			t.Errorf("blocked %v", b)
		}
	}
}

// Evaluate is pure: the same input, the same result, and the input is not changed.
func TestEvaluatePure(t *testing.T) {
	p := mustParse(t, basePolicy)
	w := newWorld()
	for i := range 4 {
		id := fmt.Sprintf("tw%d", i)
		w.place[id] = Twin{Host: "fog1", Home: "fog1"}
		w.twins[id] = TwinSignals{Lag: int64(i), CPU: 0.01}
	}
	w.hosts["fog1"] = HostSignals{CPU: 0.95}
	s := w.record(nil, t0, 40*time.Second, nil)
	in := w.input(s, State{})
	before := fmt.Sprint(in.Placement)
	a, _ := p.Evaluate(in)
	b, _ := p.Evaluate(in)
	if !reflect.DeepEqual(a, b) || len(a.Decisions) != 2 || fmt.Sprint(in.Placement) != before {
		t.Fatalf("not pure: %+v vs %+v", a, b)
	}
}

// sim runs the fog policy in a closed loop over simulated time: a fog host with an external
// load that follows load(t), twins that add their own CPU where they run and whose latency is
// high while their host is hot; decisions take effect (the twin moves) after moveTime. It
// returns every decision.
func sim(t *testing.T, p *Policy, dur time.Duration, load func(time.Duration) float64) []Decision {
	t.Helper()
	w := newWorld()
	for i := range 6 {
		id := fmt.Sprintf("tw%d", i)
		home := "fog1"
		if i%2 == 1 {
			home = "fog2"
		}
		w.place[id] = Twin{Host: home, Home: home}
	}
	const moveTime = 3 * time.Second
	type inflight struct {
		to   string
		done time.Time
	}
	var series Series
	st := State{LastMove: map[string]time.Time{}, InFlight: map[string]bool{}}
	moving := map[string]inflight{}
	var all []Decision
	for at := time.Duration(0); at <= dur; at += p.Interval {
		now := t0.Add(at)
		for id, m := range moving {
			if !now.Before(m.done) {
				tw := w.place[id]
				tw.Host = m.to
				w.place[id] = tw
				delete(moving, id)
				delete(st.InFlight, id)
			}
		}
		// figures
		cpu := map[string]float64{"cloud": 0.1, "fog1": load(at), "fog2": 0.2}
		for id, tw := range w.place {
			_ = id
			cpu[tw.Host] += 0.05
		}
		for h, c := range cpu {
			w.hosts[h] = HostSignals{CPU: min(c, 1), PSICPU: -1}
		}
		for id, tw := range w.place {
			lat := 20.0
			if tw.Host == "cloud" {
				lat = 120 // the uplink's round trip
			}
			if cpu[tw.Host] > 0.85 {
				lat = 400
			}
			w.twins[id] = TwinSignals{P99Ms: lat, CPU: 0.05, Lag: int64(lat)}
		}
		series = append(series, w.sample(now))
		if len(series) > 600 {
			series = series[len(series)-600:]
		}
		res, err := p.Evaluate(Input{Series: series, Placement: w.place, State: st, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range res.Decisions {
			if st.InFlight[d.Twin] {
				t.Fatalf("%v: %s decided while in flight", at, d.Twin)
			}
			if n := len(st.InFlight); n >= p.Budget {
				t.Fatalf("%v: over budget: %d in flight", at, n)
			}
			st.InFlight[d.Twin] = true
			st.LastMove[d.Twin] = now
			moving[d.Twin] = inflight{d.To, now.Add(moveTime)}
			all = append(all, d)
		}
	}
	return all
}

func movesPerTwin(ds []Decision) map[string][]Decision {
	m := map[string][]Decision{}
	for _, d := range ds {
		m[d.Twin] = append(m[d.Twin], d)
	}
	return m
}

// Ten minutes of load that flips faster than the rules' for (on 4 s, off 4 s, around the
// threshold): nothing moves at all.
func TestNoFlappingFastOscillation(t *testing.T) {
	p, err := Load("testdata/fog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ds := sim(t, p, 10*time.Minute, func(at time.Duration) float64 {
		if (at/(4*time.Second))%2 == 0 {
			return 0.95
		}
		return 0.4
	})
	if len(ds) != 0 {
		t.Fatalf("%d migrations under fast oscillation, want none: %v", len(ds), ds[:min(len(ds), 5)])
	}
}

// Ten minutes of slow oscillation (load 60 s on, 60 s off): fog1's twins go to the cloud when
// it is hot and come home when it is calm — once each way per cycle, never back within the
// cooldown, the budget always kept.
func TestNoFlappingSlowOscillation(t *testing.T) {
	p, err := Load("testdata/fog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const period = 2 * time.Minute
	ds := sim(t, p, 10*time.Minute, func(at time.Duration) float64 {
		if (at/(period/2))%2 == 0 {
			return 0.95
		}
		return 0.1
	})
	per := movesPerTwin(ds)
	cycles := int(10 * time.Minute / period)
	for id, moves := range per {
		if id == "tw1" || id == "tw3" || id == "tw5" {
			t.Errorf("%s (home fog2, never hot) moved: %v", id, moves)
		}
		if len(moves) > 2*cycles {
			t.Errorf("%s moved %d times in %d cycles", id, len(moves), cycles)
		}
		for i := 1; i < len(moves); i++ {
			if gap := moves[i].Time.Sub(moves[i-1].Time); gap < p.Cooldown {
				t.Errorf("%s moved again after %v (cooldown %v)", id, gap, p.Cooldown)
			}
		}
	}
	for _, id := range []string{"tw0", "tw2", "tw4"} {
		if len(per[id]) < 2 {
			t.Errorf("%s moved %d times: want out to the cloud and back at least once", id, len(per[id]))
		}
	}
	rules := map[string]int{}
	for _, d := range ds {
		rules[d.Rule+" "+d.From+"→"+d.To]++
	}
	keys := make([]string, 0, len(rules))
	for k := range rules {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("%d migrations in 10 min: %v", len(ds), rules)
}
