// Package sensors produces sensor events for the twin workload: every device emits readings with a
// strictly increasing sequence number starting at 1, keyed by device id, through an idempotent
// producer, at a fixed total rate. Command sensors wraps it; tests run it in process.
package sensors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Event is one sensor reading, the value of an input record (its key is Device).
type Event struct {
	Device   string  `json:"device"`
	Seq      int64   `json:"seq"`
	TsNS     int64   `json:"ts_ns"`
	Temp     float64 `json:"temp"`
	Humidity float64 `json:"humidity"`
}

// DeviceID names device i (0-based): d-0, d-1, ...
func DeviceID(i int) string { return "d-" + strconv.Itoa(i) }

// Config describes a run.
type Config struct {
	// Brokers are the seed brokers. Required.
	Brokers []string
	// Topic receives the events. Default "sensors".
	Topic string
	// Partitions is the topic's partition count if Run creates it. Default 3.
	Partitions int32
	// Devices is the number of devices. Default 10.
	Devices int
	// Rate is the total events per second. Default 100.
	Rate float64
	// Duration bounds the run; 0 runs until ctx is done.
	Duration time.Duration
	// Seed makes the readings reproducible. Default 1.
	Seed uint64
	// Dialer opens connections to brokers (e.g. lab.Host.DialContext). Default: TCP without MPTCP.
	Dialer func(ctx context.Context, network, host string) (net.Conn, error)
	// Opts are added to the producer's options.
	Opts []kgo.Opt
}

// Result says what was produced (acknowledged by the broker).
type Result struct {
	Produced int64            `json:"produced"`
	MaxSeq   map[string]int64 `json:"max_seq"`
}

// Run produces until cfg.Duration has passed or ctx is done, then flushes and returns what the
// broker acknowledged. Ending by ctx is not an error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if len(cfg.Brokers) == 0 {
		return Result{}, errors.New("sensors: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = "sensors"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	if cfg.Devices <= 0 {
		cfg.Devices = 10
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 100
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	dial := cfg.Dialer
	if dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		d.SetMultipathTCP(false)
		dial = d.DialContext
	}
	// kgo producers are idempotent by default (acks=all, one producer id, sequence numbers).
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.Dialer(dial), kgo.DefaultProduceTopic(cfg.Topic),
		kgo.ProducerLinger(5 * time.Millisecond)}, cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return Result{}, fmt.Errorf("sensors: create the producer: %w", err)
	}
	defer cl.Close()
	if err := EnsureTopic(ctx, cl, cfg.Topic, cfg.Partitions, nil); err != nil {
		return Result{}, err
	}

	var (
		mu       sync.Mutex
		res      = Result{MaxSeq: make(map[string]int64, cfg.Devices)}
		firstErr error
	)
	devs := make([]*Device, cfg.Devices)
	for i := range devs {
		devs[i] = NewDevice(i, cfg.Seed)
	}
	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	// Records are produced under a context that outlives runCtx, so that the last ones are
	// flushed rather than failed when the run ends.
	produceCtx := context.WithoutCancel(ctx)
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var sent int64
	next := 0
loop:
	for {
		due := int64(cfg.Rate * time.Since(start).Seconds())
		for ; sent < due; sent++ {
			d := devs[next]
			next = (next + 1) % len(devs)
			ev := d.Next(time.Now().UnixNano())
			v, _ := json.Marshal(ev)
			cl.Produce(produceCtx, &kgo.Record{Key: []byte(ev.Device), Value: v}, func(_ *kgo.Record, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					return
				}
				res.Produced++
				if ev.Seq > res.MaxSeq[ev.Device] {
					res.MaxSeq[ev.Device] = ev.Seq
				}
			})
		}
		mu.Lock()
		err := firstErr
		mu.Unlock()
		if err != nil {
			break
		}
		select {
		case <-runCtx.Done():
			break loop
		case <-tick.C:
		}
	}
	fctx, cancel := context.WithTimeout(produceCtx, 30*time.Second)
	defer cancel()
	ferr := cl.Flush(fctx)
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return res, fmt.Errorf("sensors: produce to %s: %w", cfg.Topic, firstErr)
	}
	if ferr != nil {
		return res, fmt.Errorf("sensors: flush to %s: %w", cfg.Topic, ferr)
	}
	return res, nil
}

// EnsureTopic creates topic with the given partitions (replication factor: the broker's
// default) and configs unless it exists.
func EnsureTopic(ctx context.Context, cl *kgo.Client, topic string, partitions int32, configs map[string]*string) error {
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, partitions, -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// Device generates the readings of one device: a daily-like temperature wave with noise and
// a rare spike (which the twin should flag as an anomaly), and humidity moving against it, both
// rounded to the sensors' precision of 0.01. The twin prefills its history from these
// distributions.
type Device struct {
	id    string
	seq   int64
	base  float64
	phase float64
	rng   *rand.Rand
}

// NewDevice is the generator of device i (0-based) with the given seed.
func NewDevice(i int, seed uint64) *Device {
	return &Device{id: DeviceID(i), base: 18 + float64(i%10), phase: float64(i), rng: rand.New(rand.NewPCG(seed, uint64(i)))}
}

// Next is the device's next reading, stamped tsNS (the sensor's clock).
func (d *Device) Next(tsNS int64) Event {
	d.seq++
	x := float64(d.seq)/200 + d.phase
	temp := d.base + 2*math.Sin(x) + d.rng.NormFloat64()*0.3
	if d.rng.IntN(500) == 0 {
		temp += 12
	}
	hum := 55 - 8*math.Sin(x) + d.rng.NormFloat64()
	return Event{Device: d.id, Seq: d.seq, TsNS: tsNS,
		Temp: math.Round(temp*100) / 100, Humidity: math.Round(hum*100) / 100}
}
