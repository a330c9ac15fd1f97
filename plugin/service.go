package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	api "github.com/ftwin-migrate/ftwin-migrate/api/services/migrate/v1"
	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/hooksock"
	"github.com/ftwin-migrate/ftwin-migrate/internal/agentserver"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// Service is the migration service served on containerd's socket: the API of
// api/services/migrate/v1 over the library packages the CLI uses (migrate's pipeline and
// Recover, checkpoint's Inspect), with this node's containerd reached in process.
type Service struct {
	api.UnimplementedMigrateServer

	cfg     Config
	client  *containerd.Client
	receive *agentserver.Server // nil: this node does not receive

	// progressEvery spaces transfer and catch-up events out (the stream would otherwise carry
	// one per chunk). Default 200ms.
	progressEvery time.Duration
}

// Register serves the service on containerd's gRPC server (plugins.GRPCPlugin).
func (s *Service) Register(srv *grpc.Server) error {
	api.RegisterMigrateServer(srv, s)
	return nil
}

// Close stops the receive endpoint, aborting its open sessions.
func (s *Service) Close() error {
	if s.receive == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.receive.Shutdown(ctx)
}

// Info says who this node is and where it receives.
func (s *Service) Info(ctx context.Context, _ *api.InfoRequest) (*api.InfoResponse, error) {
	r := &api.InfoResponse{Host: s.cfg.Host, Protocol: agent.ProtocolVersion}
	if s.receive != nil {
		r.ReceiveAddress = s.receive.Addr
	}
	return r, nil
}

// Inspect describes a checkpoint directory on this node.
func (s *Service) Inspect(ctx context.Context, req *api.InspectRequest) (*api.InspectResponse, error) {
	if req.GetPath() == "" {
		return nil, toGRPC(invalid("path: want a checkpoint directory on this node"))
	}
	root, store, err := transfer.ReadDir(req.GetPath())
	if err != nil {
		return nil, toGRPC(err)
	}
	info, err := checkpoint.Inspect(ctx, store, root)
	if err != nil {
		return nil, toGRPC(err)
	}
	b, err := json.Marshal(info)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &api.InspectResponse{Json: b}, nil
}

// Recover settles a container whose migration was cut short (migrate.Recover).
func (s *Service) Recover(ctx context.Context, req *api.RecoverRequest) (*api.RecoverResponse, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	if err := identifiers.Validate(req.GetContainerId()); err != nil {
		return nil, toGRPC(invalid("container_id: %v", err))
	}
	hookMode, err := migrate.ParseHookMode(orDefault(req.GetHook(), "auto"))
	if err != nil {
		return nil, toGRPC(invalid("hook: %v", err))
	}
	socket := orDefault(req.GetHookSocket(), migrate.DefaultHookSocket)
	if err := hooksock.CheckSocket(socket); err != nil {
		return nil, toGRPC(invalid("hook_socket: %v", err))
	}
	tlsCfg, err := pki.ClientConfig(s.cfg.PKI, s.cfg.Host, req.GetPeer())
	if err != nil && !req.GetForceThaw() {
		return nil, toGRPC(err)
	}
	what, err := migrate.Recover(ctx, s.client, migrate.RecoverOptions{
		Namespace: ns, Container: req.GetContainerId(), TLS: tlsCfg,
		HookMode: hookMode, HookSocket: socket, ForceThaw: req.GetForceThaw(),
	})
	if err != nil {
		return nil, toGRPC(err)
	}
	return &api.RecoverResponse{Outcome: what}, nil
}

// Migrate runs the pipeline on a container of this node and streams its phases, progress and
// report. The call's context is the migration's: a client that goes away cancels it, and the
// pipeline rolls back as it does when the CLI is interrupted.
func (s *Service) Migrate(req *api.MigrateRequest, stream grpc.ServerStreamingServer[api.MigrateEvent]) error {
	ctx := stream.Context()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return toGRPC(err)
	}
	o, err := s.options(ns, req)
	if err != nil {
		return toGRPC(err)
	}
	out := newEventStream(stream, s.progressEvery)
	o.PhaseProgress = func(p migrate.PhaseReport, done bool) {
		out.send(&api.MigrateEvent{Event: &api.MigrateEvent_Phase{Phase: phaseEvent(p, done)}}, false)
	}
	o.Progress = func(done, total int64) {
		out.send(&api.MigrateEvent{Event: &api.MigrateEvent_Transfer{Transfer: &api.TransferProgress{Done: done, Total: total}}}, done < total)
	}
	o.CatchUpProgress = func(st kafkahooks.Status) {
		out.send(&api.MigrateEvent{Event: &api.MigrateEvent_CatchUp{CatchUp: &api.CatchUpProgress{
			Lag: st.Lag, LagTime: durationpb.New(st.LagTime), Replayed: st.Replayed}}}, true)
	}
	rep, err := migrate.Migrate(ctx, s.client, o)
	if rep != nil {
		r, merr := reportMessage(rep)
		if merr != nil {
			err = fmt.Errorf("%w (and its report could not be encoded: %v)", err, merr)
		} else {
			out.send(&api.MigrateEvent{Event: &api.MigrateEvent_Report{Report: r}}, false)
		}
	}
	if serr := out.close(); serr != nil && err == nil {
		// The migration committed but its report did not reach the client: say so.
		return toGRPC(fmt.Errorf("the migration ended %q but its events could not be sent: %w", rep.Result, serr))
	}
	return toGRPC(migrationError(err, rep))
}

// options turns a request into the pipeline's options, refusing what is malformed with
// INVALID_ARGUMENT before anything happens to the container.
func (s *Service) options(ns string, req *api.MigrateRequest) (migrate.Options, error) {
	o := migrate.Options{Namespace: ns, Container: req.GetContainerId(), Target: req.GetTarget(), SourceHost: s.cfg.Host,
		Probe: req.GetProbe(), Brokers: req.GetBrokers(), WorkDir: s.dumpDir()}
	if err := identifiers.Validate(o.Container); err != nil {
		return o, invalid("container_id: %v", err)
	}
	host, port, err := net.SplitHostPort(o.Target)
	if err != nil || host == "" || port == "" {
		return o, invalid("target %q: want the target's receive endpoint, host:port", o.Target)
	}
	if s.cfg.Network.Bridge != "" { // containers' own addresses move with them (Config.Network)
		o.Network = s.cfg.Network.bridge()
	}
	// A tcp in the request overrides the pipeline's default: established for a container
	// whose address moves with it (network.bridge set, and the container has its namespace
	// there), close otherwise.
	if req.GetTcp() != "" {
		if o.TCP, err = restore.ParseTCPMode(req.GetTcp()); err != nil {
			return o, invalid("tcp: %v", err)
		}
	}
	if o.HookMode, err = migrate.ParseHookMode(orDefault(req.GetHook(), "auto")); err != nil {
		return o, invalid("hook: %v", err)
	}
	o.HookSocket = orDefault(req.GetHookSocket(), migrate.DefaultHookSocket)
	if err := hooksock.CheckSocket(o.HookSocket); err != nil {
		return o, invalid("hook_socket: %v", err)
	}
	if o.Mode, err = migrate.ParseMode(orDefault(req.GetMode(), "stop-and-copy")); err != nil {
		return o, invalid("mode: %v", err)
	}
	for _, d := range []struct {
		name string
		v    *durationpb.Duration
		to   *time.Duration
	}{{"phase_timeout", req.GetPhaseTimeout(), &o.PhaseTimeout}, {"session_timeout", req.GetSessionTimeout(), &o.SessionTimeout},
		{"catch_up_timeout", req.GetCatchUpTimeout(), &o.CatchUpTimeout}} {
		if d.v == nil {
			continue
		}
		if err := d.v.CheckValid(); err != nil || d.v.AsDuration() <= 0 {
			return o, invalid("%s %v: want a positive duration (or none for the default)", d.name, d.v.AsDuration())
		}
		*d.to = d.v.AsDuration()
	}
	if st := req.GetSettle(); st != nil {
		switch v := st.AsDuration(); {
		case st.CheckValid() != nil || v < 0:
			return o, invalid("settle %v: want 0 (no wait) or more", v)
		case v == 0:
			o.Settle = -1 // the library's "none"
		default:
			o.Settle = v
		}
	}
	if req.MaxLag != nil {
		switch v := req.GetMaxLag(); {
		case v < 0:
			return o, invalid("max_lag %d: want 0 or more records", v)
		case v == 0:
			o.MaxLag = -1 // the library's "caught up exactly"
		default:
			o.MaxLag = v
		}
	}
	peer := req.GetPeer()
	if peer == "" {
		peer = host
	}
	if o.TLS, err = pki.ClientConfig(s.cfg.PKI, s.cfg.Host, peer); err != nil {
		return o, fmt.Errorf("the plugin's PKI (%s as %s): %w", s.cfg.PKI, s.cfg.Host, err)
	}
	return o, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func phaseEvent(p migrate.PhaseReport, done bool) *api.PhaseEvent {
	e := &api.PhaseEvent{Name: string(p.Name), Done: done, Start: durationpb.New(p.Start), Error: p.Error}
	if done {
		e.Duration = durationpb.New(p.Duration)
	}
	return e
}

// reportMessage is the report as the API carries it: its main fields, and the whole of it as
// the CLI's --json prints it.
func reportMessage(rep *migrate.Report) (*api.Report, error) {
	b, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	r := &api.Report{ContainerId: rep.Container, From: rep.From, To: rep.To, Result: rep.Result, Mode: rep.Mode, Error: rep.Error,
		Downtime: durationpb.New(rep.Downtime), Total: durationpb.New(rep.Total), Json: b}
	for _, p := range rep.Phases {
		r.Phases = append(r.Phases, phaseEvent(p, true))
	}
	return r, nil
}

// eventStream sends a migration's events from the pipeline's goroutines to the client on a
// goroutine of its own, so that a slow client never blocks the pipeline. Progress events are
// spaced out and dropped when the client lags; phase events and the report are never dropped
// (there are a few dozen at most).
type eventStream struct {
	ch    chan *api.MigrateEvent
	done  chan error
	every time.Duration

	mu       sync.Mutex
	closed   bool
	lastProg time.Time
}

func newEventStream(stream grpc.ServerStreamingServer[api.MigrateEvent], every time.Duration) *eventStream {
	if every == 0 {
		every = 200 * time.Millisecond
	}
	e := &eventStream{ch: make(chan *api.MigrateEvent, 256), done: make(chan error, 1), every: every}
	go func() {
		var err error
		for ev := range e.ch {
			if err == nil {
				err = stream.Send(ev)
			}
		}
		e.done <- err
	}()
	return e
}

// send queues ev; a progress event is dropped if one was queued less than every ago or the
// queue is full.
func (e *eventStream) send(ev *api.MigrateEvent, progress bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if progress {
		if time.Since(e.lastProg) < e.every {
			return
		}
		select {
		case e.ch <- ev:
			e.lastProg = time.Now()
		default:
		}
		return
	}
	e.ch <- ev
}

// close sends what is queued and returns the first send error.
func (e *eventStream) close() error {
	e.mu.Lock()
	e.closed = true
	close(e.ch)
	e.mu.Unlock()
	return <-e.done
}

// dumpDir is where the pipeline keeps its dumps' CRIU work directories.
func (s *Service) dumpDir() string { return s.cfg.WorkDir + "/dumps" }
