// Package broker starts the Kafka broker a lab's hosts share: franz-go's kfake embedded in the
// calling process (the fast default, no Java needed) or a real Apache Kafka 4.x broker in KRaft
// combined mode, assembled from Maven Central jars by hack/install.sh.
package broker

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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
//
// To Apache Kafka's Java clients (ApiVersions from "apache-kafka-java": the command-line tools
// of `lab kafka`) it advertises neither DescribeTopicPartitions nor CreateTopics above v4:
// kfake answers the one with null eligible-leader-replica lists and the other with a null
// config list where Kafka sends empty ones, and the Java admin client (4.4) dereferences both,
// so that describing a topic or a group failed with a NullPointerException. Without them the
// Java client describes topics through Metadata, as it does with brokers before 3.8. Other
// clients (franz-go) see kfake's versions unchanged.
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
	b := &EmbeddedBroker{c: c, addr: c.ListenAddrs()[0]}
	if err := b.adaptForJavaClients(); err != nil {
		c.Close()
		return nil, fmt.Errorf("broker: kfake on %s: %w", addr, err)
	}
	return b, nil
}

// javaClientSoftware is the ClientSoftwareName of Apache Kafka's Java clients (KIP-511).
const javaClientSoftware = "apache-kafka-java"

// adaptForJavaClients answers the ApiVersions requests of Java clients with kfake's own answer
// less DescribeTopicPartitions and with CreateTopics capped at v4 (see StartEmbedded).
func (b *EmbeddedBroker) adaptForJavaClients() error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	own, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("ask for its API versions: %w", err)
	}
	java := *own
	java.ApiKeys = JavaAPIKeys(own.ApiKeys)
	b.c.ControlKey(int16(kmsg.ApiVersions), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		req := kreq.(*kmsg.ApiVersionsRequest)
		if req.ClientSoftwareName != javaClientSoftware || req.Version > own.Version {
			return nil, nil, false
		}
		resp := java
		resp.Version = req.Version
		resp.ApiKeys = slices.Clone(java.ApiKeys)
		return &resp, nil, true
	})
	return nil
}

// JavaAPIKeys returns keys without DescribeTopicPartitions and with CreateTopics at most v4:
// what the embedded broker advertises to Java clients (see StartEmbedded).
func JavaAPIKeys(keys []kmsg.ApiVersionsResponseApiKey) []kmsg.ApiVersionsResponseApiKey {
	var out []kmsg.ApiVersionsResponseApiKey
	for _, k := range keys {
		switch kmsg.Key(k.ApiKey) {
		case kmsg.DescribeTopicPartitions:
			continue
		case kmsg.CreateTopics:
			k.MaxVersion = min(k.MaxVersion, 4)
		}
		out = append(out, k)
	}
	return out
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
