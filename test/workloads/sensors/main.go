// Command sensors is the load generator of the twin workload: it creates the input topic if
// absent and produces sensor readings (key: device id, value: JSON {"device","seq","ts_ns",
// "temp","humidity"}) with a strictly increasing per-device seq from 1, through an idempotent
// producer. At exit (duration over, SIGTERM or SIGINT) it prints what the broker acknowledged:
// {"produced":N,"max_seq":{"d-0":123,...}}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ftwin-migrate/ftwin-migrate/sensors"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "seed brokers, comma-separated")
	topic := flag.String("topic", "sensors", "input topic of the twin")
	devices := flag.Int("devices", 10, "number of devices")
	rate := flag.Float64("rate", 100, "events per second, all devices together")
	duration := flag.Duration("duration", 0, "how long to produce (0: until SIGTERM)")
	partitions := flag.Int("partitions", 3, "partitions of the topic if it is created")
	seed := flag.Uint64("seed", 1, "seed of the readings")
	flag.Parse()
	if flag.NArg() > 0 || *devices < 1 || *rate <= 0 || *partitions < 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := sensors.Run(ctx, sensors.Config{
		Brokers: strings.Split(*brokers, ","), Topic: *topic, Partitions: int32(*partitions),
		Devices: *devices, Rate: *rate, Duration: *duration, Seed: *seed,
	})
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sensors:", err)
		os.Exit(1)
	}
}
