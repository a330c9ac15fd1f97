package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	api "github.com/ftwin-migrate/ftwin-migrate/api/services/migrate/v1"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
)

// Migrate drives a migration through the plugin over conn, a gRPC connection to containerd's
// socket (containerd's client.Conn(), or any grpc.ClientConn on it); ctx carries the
// containerd namespace (namespaces.WithNamespace). onEvent, when set, sees every event as it
// comes, the report last. Migrate returns the report the plugin sent — the CLI's report,
// decoded from its JSON — and the call's error mapped back to errdefs (errgrpc.ToNative), so
// errdefs.IsAborted(err) says a migration rolled back cleanly.
func Migrate(ctx context.Context, conn grpc.ClientConnInterface, req *api.MigrateRequest, onEvent func(*api.MigrateEvent)) (*migrate.Report, error) {
	stream, err := api.NewMigrateClient(conn).Migrate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("migrate %s through containerd's plugin %s: %w", req.GetContainerId(), URI, errgrpc.ToNative(err))
	}
	var rep *migrate.Report
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if rep == nil {
				return nil, fmt.Errorf("migrate %s through containerd's plugin %s: the stream ended without a report", req.GetContainerId(), URI)
			}
			return rep, nil
		}
		if err != nil {
			if rep == nil {
				return nil, fmt.Errorf("migrate %s through containerd's plugin %s: %w", req.GetContainerId(), URI, errgrpc.ToNative(err))
			}
			return rep, errgrpc.ToNative(err)
		}
		if onEvent != nil {
			onEvent(ev)
		}
		if r := ev.GetReport(); r != nil {
			rep = &migrate.Report{}
			if err := json.Unmarshal(r.GetJson(), rep); err != nil {
				return nil, fmt.Errorf("migrate %s through containerd's plugin %s: its report: %w", req.GetContainerId(), URI, err)
			}
		}
	}
}

// Dial connects a plain gRPC client to containerd's socket at address (a path, or unix://PATH):
// what Migrate needs, and what any platform's gRPC client does. Close the connection when done.
func Dial(address string) (*grpc.ClientConn, error) {
	if !strings.HasPrefix(address, "unix://") {
		address = "unix://" + address
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	return conn, nil
}

// Request is the request that asks the plugin for the migration o describes, as Migrate in
// process would run it; peer is the target's name in the PKI (empty: the host of o.Target).
// What only a process of its own can carry is left out: the TLS configuration (the plugin has
// its own, from its PKI), a Hook, a Network (the plugin moves containers' own addresses as its
// configuration's network section says, on both sides: see Config.Network), agent client
// options, progress callbacks, Kafka client options and the work directory.
func Request(o migrate.Options, peer string) *api.MigrateRequest {
	r := &api.MigrateRequest{
		ContainerId: o.Container, Target: o.Target, Peer: peer, Probe: o.Probe, Tcp: string(o.TCP),
		Hook: o.HookMode.String(), HookSocket: o.HookSocket, Brokers: o.Brokers, Mode: o.Mode.String(),
	}
	for _, d := range []struct {
		v  time.Duration
		to **durationpb.Duration
	}{{o.PhaseTimeout, &r.PhaseTimeout}, {o.SessionTimeout, &r.SessionTimeout}, {o.CatchUpTimeout, &r.CatchUpTimeout}} {
		if d.v > 0 {
			*d.to = durationpb.New(d.v)
		}
	}
	switch {
	case o.Settle < 0:
		r.Settle = durationpb.New(0)
	case o.Settle > 0:
		r.Settle = durationpb.New(o.Settle)
	}
	switch {
	case o.MaxLag < 0:
		r.MaxLag = proto.Int64(0)
	case o.MaxLag > 0:
		r.MaxLag = proto.Int64(o.MaxLag)
	}
	return r
}
