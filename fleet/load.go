package fleet

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/placestate"
	"github.com/ftwin-migrate/ftwin-migrate/sensors"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// Sensors are the sensors of a set of twins, producing until Stop.
type Sensors struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    map[string]sensors.Result
	errs   map[string]error
}

// StartSensors starts each twin's sensors: devices readings at rate events/s in all into its
// sensors' topic, dialled from its home host (the sensors sit at the fog site).
func (f *Fleet) StartSensors(twins []placestate.Twin, devices int, rate float64) *Sensors {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sensors{cancel: cancel, res: map[string]sensors.Result{}, errs: map[string]error{}}
	for i, t := range twins {
		cfg := sensors.Config{Brokers: f.Brokers, Topic: t.Input, Partitions: 1, Devices: devices, Rate: rate, Seed: uint64(i + 1)}
		if h, err := f.Lab.Host(t.Home); err == nil {
			cfg.Dialer = h.DialContext
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			res, err := sensors.Run(ctx, cfg)
			s.mu.Lock()
			s.res[t.ID], s.errs[t.ID] = res, err
			s.mu.Unlock()
		}()
	}
	return s
}

// Stop stops the sensors and returns what each twin's produced (acknowledged by the broker).
func (s *Sensors) Stop() (map[string]sensors.Result, error) {
	s.cancel()
	s.wg.Wait()
	for id, err := range s.errs {
		if err != nil {
			return s.res, fmt.Errorf("fleet: sensors of %s: %w", id, err)
		}
	}
	return s.res, nil
}

// TwinVerdict is a twin's output checked against what its sensors produced.
type TwinVerdict struct {
	Twin     string
	In       int64
	Report   verify.Report
	Complete bool // every event came out
}

// OK says every event was processed exactly once.
func (v TwinVerdict) OK() bool {
	return v.Complete && v.Report.Lost == 0 && v.Report.Duplicated == 0 && v.Report.EventsOut == v.In
}

// Verify waits (up to timeout) until each twin's output holds as many events as its sensors
// produced, then checks it (read_committed): lost, duplicated, out of order.
func (f *Fleet) Verify(ctx context.Context, twins []placestate.Twin, produced map[string]sensors.Result, timeout time.Duration) ([]TwinVerdict, error) {
	var out []TwinVerdict
	deadline := time.Now().Add(timeout)
	for _, t := range twins {
		in := produced[t.ID]
		v := TwinVerdict{Twin: t.ID, In: in.Produced}
		for {
			rep, err := verify.Output(ctx, f.Brokers, t.Output, verify.ExpectMaxSeq(in.MaxSeq))
			if err != nil && time.Now().After(deadline) {
				return out, fmt.Errorf("fleet: verify %s: %w", t.ID, err)
			}
			if err == nil {
				v.Report = rep
				if rep.EventsOut >= in.Produced || time.Now().After(deadline) {
					v.Complete = rep.EventsOut >= in.Produced
					break
				}
			}
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
		out = append(out, v)
	}
	return out, nil
}

func readEvents(ctx context.Context, brokers []string, topic string) ([]verify.Event, error) {
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	events, _, err := verify.Events(rctx, brokers, topic)
	if err != nil {
		return nil, fmt.Errorf("fleet: read %s: %w", topic, err)
	}
	return events, nil
}
