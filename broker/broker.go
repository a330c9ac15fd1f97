// Package broker starts the Kafka broker a lab's hosts share: franz-go's kfake embedded in the
// calling process (the fast default, no Java needed) or a real Apache Kafka 4.x broker in KRaft
// combined mode, assembled from Maven Central jars by hack/install.sh.
package broker

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/internal/wait"
)

// Kind names a broker implementation.
type Kind string

const (
	// None runs no broker.
	None Kind = "none"
	// Embedded is franz-go's kfake, in process.
	Embedded Kind = "kfake"
	// Apache is a real Apache Kafka broker (KRaft), a child process.
	Apache Kind = "apache"
)

// ParseKind accepts "none", "kfake" (or "embedded") and "apache" (or "kafka").
func ParseKind(s string) (Kind, error) {
	switch s {
	case "none", "":
		return None, nil
	case "kfake", "embedded":
		return Embedded, nil
	case "apache", "kafka":
		return Apache, nil
	}
	return "", fmt.Errorf("unknown broker kind %q: want none, kfake or apache", s)
}

// Broker is a running Kafka broker.
type Broker interface {
	// Kind says which implementation runs.
	Kind() Kind
	// Addr is the bootstrap address, host:port, reachable from every lab host.
	Addr() string
	// Close stops the broker and releases what it holds.
	Close() error
}

// EmbeddedBroker is a kfake cluster of one broker serving on a fixed address.
type EmbeddedBroker struct {
	c    *kfake.Cluster
	addr string
}

// StartEmbedded serves a one-broker kfake cluster on addr (host:port; the host must be an
// address of this network namespace, for example a lab bridge's address).
func StartEmbedded(addr string, opts ...kfake.Opt) (*EmbeddedBroker, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("broker: bad listen address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("broker: bad port in %q: %w", addr, err)
	}
	listen := func(network, a string) (net.Listener, error) {
		_, p, _ := net.SplitHostPort(a)
		return net.Listen(network, net.JoinHostPort(host, p))
	}
	base := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.ListenFn(listen), kfake.AllowAutoTopicCreation()}
	c, err := kfake.NewCluster(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("broker: start kfake on %s: %w", addr, err)
	}
	return &EmbeddedBroker{c: c, addr: c.ListenAddrs()[0]}, nil
}

func (b *EmbeddedBroker) Kind() Kind   { return Embedded }
func (b *EmbeddedBroker) Addr() string { return b.addr }
func (b *EmbeddedBroker) Close() error { b.c.Close(); return nil }

// Cluster exposes the kfake cluster for tests that inject faults.
func (b *EmbeddedBroker) Cluster() *kfake.Cluster { return b.c }

// WaitReady polls addr with a Kafka client until a broker answers or ctx ends.
func WaitReady(ctx context.Context, addr string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DialTimeout(time.Second))
	if err != nil {
		return fmt.Errorf("broker: client for %s: %w", addr, err)
	}
	defer cl.Close()
	var last error
	err = wait.Until(ctx, 200*time.Millisecond, func() (bool, error) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		last = cl.Ping(pctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("broker at %s not ready: %w (last error: %v)", addr, err, last)
	}
	return nil
}
