package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
)

// UpConfig describes a fleet brought up on a new lab.
type UpConfig struct {
	// Lab configures the lab; its Broker must be one (kfake or Apache).
	Lab lab.Config
	// Twins are the twins, each started on its Host.
	Twins []placestate.Twin
	Twin  TwinConfig
	// Devices and Rate are each twin's sensors: devices, events per second in all. Defaults
	// Twin.Devices and 20.
	Devices int
	Rate    float64
	// StateTopic is the placement state's topic. Default placestate.DefaultTopic.
	StateTopic string
	// Options configure the fleet (New).
	Options []Option
}

// Running is a fleet brought up by Up: the lab, an agent on every host (served in this
// process), the twins registered in the placement state and their sensors producing.
type Running struct {
	*Fleet
	Store   *placestate.Store
	Twins   []placestate.Twin
	Sensors *Sensors
	agents  []*lab.RunningAgent
}

// Up brings up a lab, its agents, the twins and their sensors, and returns once every twin
// has produced output. On error everything it started is stopped again.
func Up(ctx context.Context, cfg UpConfig) (r *Running, err error) {
	cfg.Twin.defaults()
	if cfg.Devices == 0 {
		cfg.Devices = cfg.Twin.Devices
	}
	if cfg.Rate == 0 {
		cfg.Rate = 20
	}
	if cfg.StateTopic == "" {
		cfg.StateTopic = placestate.DefaultTopic
	}
	l, err := lab.Up(ctx, cfg.Lab)
	if err != nil {
		return nil, err
	}
	r = &Running{Twins: cfg.Twins}
	r.Fleet = New(l, []string{l.BrokerAddr}, cfg.Options...)
	defer func() {
		if err != nil {
			_ = r.Close()
			r = nil
		}
	}()
	if l.BrokerAddr == "" {
		return r, errors.New("fleet: the lab has no broker: give lab.Config a Broker")
	}
	var hosts []pki.Host
	for _, h := range l.Hosts {
		hosts = append(hosts, pki.Host{Name: h.Name, IPs: []net.IP{net.ParseIP(h.IP)}})
	}
	if err := pki.Init(r.cfg.pkiDir, hosts); err != nil {
		return r, err
	}
	for _, h := range l.Hosts {
		a, err := h.StartAgent(ctx, r.cfg.pkiDir, nil)
		if err != nil {
			return r, err
		}
		r.agents = append(r.agents, a)
	}
	if r.Store, err = placestate.Open(ctx, r.Brokers, placestate.WithTopic(cfg.StateTopic)); err != nil {
		return r, err
	}
	for _, t := range cfg.Twins {
		if err := r.Start(ctx, t, cfg.Twin); err != nil {
			return r, err
		}
	}
	if err := Register(ctx, r.Store, cfg.Twins...); err != nil {
		return r, err
	}
	r.Sensors = r.StartSensors(cfg.Twins, cfg.Devices, cfg.Rate)
	return r, r.WaitOutput(ctx, 90*time.Second)
}

// WaitOutput waits until every twin has committed output.
func (r *Running) WaitOutput(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, t := range r.Twins {
		for {
			evs, err := r.Events(ctx, t)
			if err == nil && len(evs) > 0 {
				break
			}
			if time.Now().After(deadline) {
				h, _ := r.Lab.Host(t.Host)
				return fmt.Errorf("fleet: twin %s produced no output in %v (last error: %v); see %s", t.ID, timeout, err, h.LogPath(t.ID))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}

// Finish stops the sensors and verifies every twin's output against what its sensors produced.
func (r *Running) Finish(ctx context.Context) ([]TwinVerdict, error) {
	produced, err := r.Sensors.Stop()
	if err != nil {
		return nil, err
	}
	return r.Verify(ctx, r.Twins, produced, 90*time.Second)
}

// Close stops the sensors and agents and removes the lab.
func (r *Running) Close() error {
	if r.Sensors != nil {
		_, _ = r.Sensors.Stop()
	}
	if r.Store != nil {
		r.Store.Close()
	}
	for _, a := range r.agents {
		_ = a.Close()
	}
	return r.Lab.Down(context.Background())
}
