// Package placement decides where digital twins run: a policy file (YAML) of rules whose
// conditions are expressions (github.com/expr-lang/expr), evaluated over recorded signal
// series — per twin: event latency, consumer lag, CPU; per host: CPU and memory pressure,
// uplink throughput — into migration decisions, with hysteresis (a condition must hold for a
// duration), a cooldown per twin, a budget of concurrent migrations and a headroom check on
// every target.
//
// The evaluator (Policy.Evaluate, Policy.PlanDrain) is a pure function of its Input: the
// signal series, the current placement, the controller's state (cooldowns, migrations in
// flight, cordons) and the time. It measures nothing and moves nothing; the controller and
// the drain command do (package fleet).
//
// A policy file:
//
//	interval: 5s        # how often the controller samples and evaluates
//	budget: 2           # migrations in flight at most
//	cooldown: 2m        # a twin that moved (or failed to) is left alone this long
//	hosts:              # the hosts and their roles (targets name roles, hosts or "home")
//	  cloud: {role: cloud}
//	  fog1:  {role: fog, capacity: 8}
//	headroom: "host.cpu < 0.7 && host.mem < 0.8 && host.twins <= host.capacity"
//	drain: [home, cloud]
//	rules:
//	  - name: latency-to-fog
//	    scope: twin
//	    when: "twin.p99_ms > 200 && twin.host != twin.home"
//	    for: 30s
//	    to: [home]
//	  - name: shed-hot-fog
//	    scope: host
//	    when: "host.role == 'fog' && host.cpu > 0.85"
//	    for: 30s
//	    to: [cloud]
//	    order: "twin.lag"   # largest first
//
// Expressions see `twin`, `host` and `home` (see Env for their fields); a twin rule's `host`
// is the host the twin runs on and `home` the fog host of its sensors; a host rule sees only
// `host`; the headroom expression sees the candidate target as `host`, its figures projected
// as if the twin had moved there, and the twin as `twin`.
package placement

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"
)

// Scope is what a rule is about.
type Scope string

const (
	// ScopeTwin rules are evaluated per twin and move that twin.
	ScopeTwin Scope = "twin"
	// ScopeHost rules are evaluated per host and shed its twins.
	ScopeHost Scope = "host"
)

// Home, in a list of targets, is the host a twin's sensors are at (Twin.Home).
const Home = "home"

// Defaults of a policy file's optional fields.
const (
	DefaultInterval = 5 * time.Second
	DefaultBudget   = 2
	DefaultCooldown = 2 * time.Minute
	DefaultHeadroom = "host.cpu < 0.7 && host.mem < 0.9"
)

// DefaultDrain is the drain's preference when the policy names none: a twin goes home (unless
// home is the host drained), else to the cloud.
var DefaultDrain = []string{Home, "cloud"}

// Policy is a parsed and compiled policy file. Load or Parse it; the zero value is not usable.
type Policy struct {
	// Interval is how often the controller samples the signals and evaluates the rules.
	Interval time.Duration
	// Budget is the most migrations in flight at once (State.InFlight counts against it).
	Budget int
	// Cooldown: a twin whose last migration started less than Cooldown ago is not moved by a
	// rule (a drain ignores it).
	Cooldown time.Duration
	// Hosts are the hosts the policy knows, by name.
	Hosts map[string]HostSpec
	// Headroom is the source of the headroom expression.
	Headroom string
	// Drain is the drain's list of targets, in order of preference.
	Drain []string
	// Rules, in order of priority: a twin gets at most one decision per evaluation, from the
	// first rule that moves it.
	Rules []*Rule

	headroom *vm.Program
}

// HostSpec is what the policy says of a host.
type HostSpec struct {
	// Role groups hosts ("cloud", "fog"); a target that names a role means its host with the
	// most headroom.
	Role string `yaml:"role"`
	// Capacity is the number of twins the host takes (host.capacity in expressions; 0: no limit,
	// seen as a very large number).
	Capacity int `yaml:"capacity"`
}

// Rule is one rule of a policy.
type Rule struct {
	Name  string
	Scope Scope
	// When is the condition's source; it must hold at every sample of the last For.
	When string
	For  time.Duration
	// To lists the targets in order of preference: Home, a role or a host name.
	To []string
	// Order is, for a host rule, the source of the expression its twins are shed by, largest
	// first ("twin.lag" unless given).
	Order string
	// MaxPerRound, when positive, limits the twins this rule moves in one evaluation (the
	// budget always does).
	MaxPerRound int

	when, order *vm.Program
	refs        []string
}

type fileRule struct {
	Name        string        `yaml:"name"`
	Scope       Scope         `yaml:"scope"`
	When        string        `yaml:"when"`
	For         time.Duration `yaml:"for"`
	To          []string      `yaml:"to"`
	Order       string        `yaml:"order"`
	MaxPerRound int           `yaml:"max_per_round"`
}

type file struct {
	Interval time.Duration       `yaml:"interval"`
	Budget   *int                `yaml:"budget"`
	Cooldown *time.Duration      `yaml:"cooldown"`
	Hosts    map[string]HostSpec `yaml:"hosts"`
	Headroom string              `yaml:"headroom"`
	Drain    []string            `yaml:"drain"`
	Rules    []fileRule          `yaml:"rules"`
}

// Load reads and compiles the policy file at path.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("placement: read policy: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// Parse reads and compiles a policy from YAML. Unknown fields, bad durations, expressions that
// do not compile to a boolean (or, for order, a number) and targets naming neither home, a
// role nor a host of the policy are errors, with the rule's name.
func Parse(b []byte) (*Policy, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("placement: policy: %w", err)
	}
	p := &Policy{Interval: f.Interval, Budget: DefaultBudget, Cooldown: DefaultCooldown, Hosts: f.Hosts, Headroom: f.Headroom, Drain: f.Drain}
	if p.Interval == 0 {
		p.Interval = DefaultInterval
	}
	if f.Budget != nil {
		p.Budget = *f.Budget
	}
	if f.Cooldown != nil {
		p.Cooldown = *f.Cooldown
	}
	if p.Headroom == "" {
		p.Headroom = DefaultHeadroom
	}
	if len(p.Drain) == 0 {
		p.Drain = DefaultDrain
	}
	if p.Interval < 0 || p.Budget < 1 || p.Cooldown < 0 {
		return nil, fmt.Errorf("placement: policy: interval %v, budget %d, cooldown %v: want a positive interval, a budget of at least 1 and a cooldown of 0 or more", p.Interval, p.Budget, p.Cooldown)
	}
	if len(p.Hosts) == 0 {
		return nil, errors.New("placement: policy: no hosts: list them under hosts: with their roles")
	}
	for name, h := range p.Hosts {
		if !nameRE.MatchString(name) || h.Role == "" || h.Capacity < 0 {
			return nil, fmt.Errorf("placement: policy: host %q (role %q, capacity %d): want a name, a role and a capacity of 0 (no limit) or more", name, h.Role, h.Capacity)
		}
	}
	var err error
	if p.headroom, err = compileBool(p.Headroom); err != nil {
		return nil, fmt.Errorf("placement: policy: headroom: %w", err)
	}
	if err := p.checkTargets("drain", p.Drain); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, fr := range f.Rules {
		r := &Rule{Name: fr.Name, Scope: fr.Scope, When: fr.When, For: fr.For, To: fr.To, Order: fr.Order, MaxPerRound: fr.MaxPerRound}
		if !nameRE.MatchString(r.Name) || seen[r.Name] {
			return nil, fmt.Errorf("placement: policy: rule %d: name %q: want a unique name of letters, digits, _ . -", i+1, r.Name)
		}
		seen[r.Name] = true
		if r.Scope == "" {
			r.Scope = ScopeTwin
		}
		if r.Scope != ScopeTwin && r.Scope != ScopeHost {
			return nil, fmt.Errorf("placement: policy: rule %s: scope %q: want twin or host", r.Name, r.Scope)
		}
		if r.For < 0 || r.MaxPerRound < 0 {
			return nil, fmt.Errorf("placement: policy: rule %s: for %v, max_per_round %d: want 0 or more", r.Name, r.For, r.MaxPerRound)
		}
		if r.When == "" {
			return nil, fmt.Errorf("placement: policy: rule %s: no when: give its condition", r.Name)
		}
		if r.when, err = compileBool(r.When); err != nil {
			return nil, fmt.Errorf("placement: policy: rule %s: when: %w", r.Name, err)
		}
		if r.refs, err = references(r.When); err != nil {
			return nil, fmt.Errorf("placement: policy: rule %s: when: %w", r.Name, err)
		}
		if len(r.To) == 0 {
			return nil, fmt.Errorf("placement: policy: rule %s: no to: list its targets (home, a role or a host)", r.Name)
		}
		if err := p.checkTargets("rule "+r.Name, r.To); err != nil {
			return nil, err
		}
		if r.Scope == ScopeHost {
			if r.Order == "" {
				r.Order = "twin.lag"
			}
			if r.order, err = expr.Compile(r.Order, expr.Env(Env{}), expr.AsFloat64()); err != nil {
				return nil, fmt.Errorf("placement: policy: rule %s: order: %w", r.Name, err)
			}
		} else if r.Order != "" {
			return nil, fmt.Errorf("placement: policy: rule %s: order is for host rules (which twins to shed first)", r.Name)
		}
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

func (p *Policy) checkTargets(what string, to []string) error {
	for _, t := range to {
		if t == Home {
			continue
		}
		if _, ok := p.Hosts[t]; ok {
			continue
		}
		if len(p.hostsOfRole(t)) > 0 {
			continue
		}
		return fmt.Errorf("placement: policy: %s: target %q is neither home, a host nor a role of the policy's hosts", what, t)
	}
	return nil
}

func (p *Policy) hostsOfRole(role string) []string {
	var hs []string
	for name, h := range p.Hosts {
		if h.Role == role {
			hs = append(hs, name)
		}
	}
	sort.Strings(hs)
	return hs
}

func compileBool(src string) (*vm.Program, error) {
	return expr.Compile(src, expr.Env(Env{}), expr.AsBool())
}

// references lists the fields an expression reads ("twin.p99_ms", "host.cpu"): the values a
// decision records.
func references(src string) ([]string, error) {
	tree, err := parser.Parse(src)
	if err != nil {
		return nil, err
	}
	v := &refVisitor{seen: map[string]bool{}}
	ast.Walk(&tree.Node, v)
	sort.Strings(v.refs)
	return v.refs, nil
}

type refVisitor struct {
	refs []string
	seen map[string]bool
}

func (v *refVisitor) Visit(n *ast.Node) {
	m, ok := (*n).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok {
		return
	}
	s, ok := m.Property.(*ast.StringNode)
	if !ok {
		return
	}
	ref := id.Value + "." + s.Value
	if !v.seen[ref] {
		v.seen[ref] = true
		v.refs = append(v.refs, ref)
	}
}
