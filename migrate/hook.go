package migrate

import (
	"context"
	"fmt"
	"net/http"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/hooksock"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
)

// Hook lets the application inside the container take part in its migration. Its one
// implementation here is the container's hook socket (SocketHook, package kafkahooks's
// protocol); a caller may give its own.
type Hook interface {
	// Prepare brings the source application to a boundary it can resume from, before the
	// freeze: for Kafka, its group's committed offsets with no transaction open.
	Prepare(ctx context.Context) (*kafkahooks.Boundary, error)
	// Resume tells the restored copy to continue from the boundary, through target, which
	// reaches the copy's hook (the agent's relay), and returns where it resumed fetching.
	Resume(ctx context.Context, target http.RoundTripper) (kafkahooks.Offsets, error)
	// Abort tells the source application, thawed after a rollback, to carry on.
	Abort(ctx context.Context) error
}

// HookMode says whether a migration looks for the application's hook.
type HookMode int

const (
	// HookAuto uses the container's hook socket when it serves one, and freezes the application
	// as it is otherwise. The default.
	HookAuto HookMode = iota
	// HookRequired refuses, in the preflight, a container whose application serves no hook.
	HookRequired
	// HookOff never calls a hook: the application is frozen as it is.
	HookOff
)

// ParseHookMode reads a hook mode as a flag gives it: auto, required or off.
func ParseHookMode(s string) (HookMode, error) {
	switch s {
	case "", "auto":
		return HookAuto, nil
	case "required":
		return HookRequired, nil
	case "off":
		return HookOff, nil
	}
	return 0, fmt.Errorf("hook mode %q: want auto (use the application's hook if it serves one), required or off (freeze it as it is)", s)
}

func (m HookMode) String() string {
	return [...]string{"auto", "required", "off"}[m]
}

// DefaultHookSocket is where an application's migration hook listens inside its container.
const DefaultHookSocket = kafkahooks.DefaultSocketPath

// SocketHook is the Hook of an application that serves the kafkahooks protocol on a Unix
// socket inside its container: prepare and abort reach the source through /proc/PID/root, and
// resume goes through the target's relay to the restored copy.
type SocketHook struct {
	// Socket is the socket's path inside the container.
	Socket string
	source *kafkahooks.Client
}

// FindSocketHook returns the hook of the container whose init process is pid if it serves one
// at socket (a clean absolute path inside the container, resolved inside its root; "" means
// DefaultHookSocket), nil if nothing is there, an error if something else is.
func FindSocketHook(pid uint32, socket string) (*SocketHook, error) {
	if socket == "" {
		socket = DefaultHookSocket
	}
	s, err := hooksock.InContainer(pid, socket)
	if err != nil {
		return nil, err
	}
	if ok, err := s.Serves(); !ok || err != nil {
		return nil, err
	}
	return &SocketHook{Socket: socket, source: kafkahooks.NewClient(s.Transport(), s.String())}, nil
}

// Prepare implements Hook.
func (h *SocketHook) Prepare(ctx context.Context) (*kafkahooks.Boundary, error) {
	b, err := h.source.Prepare(ctx)
	if err != nil {
		return nil, fmt.Errorf("application hook: %w", err)
	}
	return &b, nil
}

// Resume implements Hook.
func (h *SocketHook) Resume(ctx context.Context, target http.RoundTripper) (kafkahooks.Offsets, error) {
	return h.copy(target).Resume(ctx)
}

// Abort implements Hook.
func (h *SocketHook) Abort(ctx context.Context) error { return h.source.Abort(ctx) }

// Status implements ReplayHook.
func (h *SocketHook) Status(ctx context.Context) (kafkahooks.Status, error) {
	return h.source.Status(ctx)
}

// Release implements ReplayHook.
func (h *SocketHook) Release(ctx context.Context) error {
	_, err := h.source.Release(ctx)
	return err
}

func (h *SocketHook) copy(target http.RoundTripper) *kafkahooks.Client {
	return kafkahooks.NewClient(target, "the target's relay to "+h.Socket)
}

// Shadow implements ReplayHook.
func (h *SocketHook) Shadow(ctx context.Context, target http.RoundTripper) (kafkahooks.Offsets, error) {
	return h.copy(target).Shadow(ctx)
}

// ShadowStatus implements ReplayHook.
func (h *SocketHook) ShadowStatus(ctx context.Context, target http.RoundTripper) (kafkahooks.Status, error) {
	return h.copy(target).Status(ctx)
}

// Advance implements ReplayHook.
func (h *SocketHook) Advance(ctx context.Context, target http.RoundTripper, to kafkahooks.Offsets) (kafkahooks.Advanced, error) {
	return h.copy(target).Advance(ctx, to)
}

// BoundaryCheck records how the broker's view matched the application's boundary.
type BoundaryCheck struct {
	// CommittedBefore: the group's committed offsets, read from the broker before the
	// checkpoint, equal the boundary.
	CommittedBefore bool `json:"committed_before_checkpoint_match"`
	// Resumed: the restored copy was told to resume; ResumedAt is where it says it resumed
	// fetching and ResumedMatch whether that equals the boundary.
	Resumed      bool               `json:"resumed"`
	ResumedAt    kafkahooks.Offsets `json:"resumed_at,omitempty"`
	ResumedMatch bool               `json:"resumed_match"`
}

// committedOffsets reads group's committed offsets from the broker.
func committedOffsets(ctx context.Context, brokers []string, opts []kgo.Opt, group string) (kafkahooks.Offsets, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets of group %s: %w", group, err)
	}
	return kafkahooks.OffsetsFromKadm(resp), nil
}

// endOffsets reads the log end offsets of the partitions of of from the broker.
func endOffsets(ctx context.Context, brokers []string, opts []kgo.Opt, of kafkahooks.Offsets) (kafkahooks.Offsets, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	topics := make([]string, 0, len(of))
	for t := range of {
		topics = append(topics, t)
	}
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list the end offsets of %v: %w", topics, err)
	}
	out := kafkahooks.Offsets{}
	listed.Each(func(o kadm.ListedOffset) { out.Set(o.Topic, o.Partition, o.Offset) })
	return out, nil
}
