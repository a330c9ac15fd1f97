package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
)

// DefaultHookSocket is where an application's migration hook listens inside its container
// (see package kafkahooks for the protocol).
const DefaultHookSocket = "/run/ftwin-migrate/hook.sock"

// Offsets maps topic → partition → offset (the next offset to consume).
type Offsets map[string]map[int32]int64

// Boundary is what an application reports when it has quiesced: the consumer group's state
// and the committed offsets it will resume from.
type Boundary struct {
	Group         string  `json:"group"`
	MemberID      string  `json:"member_id"`
	InstanceID    string  `json:"instance_id"`
	Generation    int32   `json:"generation"`
	Transactional bool    `json:"transactional"`
	Offsets       Offsets `json:"offsets"`
	// SessionTimeoutMs is the group session timeout the consumer runs with, if it says.
	SessionTimeoutMs int64 `json:"session_timeout_ms,omitempty"`
}

// BoundaryCheck records how the broker's view matched the application's boundary.
type BoundaryCheck struct {
	// CommittedBefore: the group's committed offsets, read from the broker before the
	// checkpoint, equal the boundary.
	CommittedBefore bool `json:"committed_before_checkpoint_match"`
	// ResumedAt is where the restored copy says it resumed fetching; ResumedMatch says it equals
	// the boundary.
	ResumedAt    Offsets `json:"resumed_at,omitempty"`
	ResumedMatch bool    `json:"resumed_match"`
}

// appHook drives a container's hook socket: prepare and abort on the source directly through
// /proc/PID/root, resume on the target through the agent's relay.
type appHook struct {
	sourcePath string
	socket     string
}

// findAppHook returns the container's hook if its socket exists (socket "" means the default).
func findAppHook(pid uint32, socket string) *appHook {
	if socket == "" {
		socket = DefaultHookSocket
	}
	p := agent.HookSocketPath(pid, socket)
	if fi, err := os.Stat(p); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil
	}
	return &appHook{sourcePath: p, socket: socket}
}

func (h *appHook) prepare(ctx context.Context) (*Boundary, error) {
	var b Boundary
	if err := decodeHook(agent.CallHook(ctx, h.sourcePath, "prepare", nil))(&b); err != nil {
		return nil, fmt.Errorf("application hook prepare: %w", err)
	}
	return &b, nil
}

func (h *appHook) abort(ctx context.Context) error {
	if err := decodeHook(agent.CallHook(ctx, h.sourcePath, "abort", nil))(nil); err != nil {
		return fmt.Errorf("application hook abort: %w", err)
	}
	return nil
}

// decodeHook turns a hook answer into a decoder of its JSON body, or its error.
func decodeHook(status int, body []byte, err error) func(v any) error {
	return func(v any) error {
		if err != nil {
			return err
		}
		if status/100 != 2 {
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(body, &e) == nil && e.Error != "" {
				return errors.New(e.Error)
			}
			return fmt.Errorf("status %d: %s", status, body)
		}
		if v == nil {
			return nil
		}
		return json.Unmarshal(body, v)
	}
}

// resumed parses the answer to resume: {"offsets": ...}.
type resumed struct {
	Offsets Offsets `json:"offsets"`
}

// committedOffsets reads group's committed offsets from the broker.
func committedOffsets(ctx context.Context, brokers []string, opts []kgo.Opt, group string) (Offsets, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets of group %s: %w", group, err)
	}
	if err := resp.Error(); err != nil {
		return nil, fmt.Errorf("fetch committed offsets of group %s: %w", group, err)
	}
	out := Offsets{}
	resp.Each(func(o kadm.OffsetResponse) {
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.At
	})
	return out, nil
}

// Equal reports whether o and p hold the same offsets.
func (o Offsets) Equal(p Offsets) bool {
	return o.String() == p.String()
}

// String is a stable rendering: topic[p]=offset, sorted.
func (o Offsets) String() string {
	var parts []string
	for t, ps := range o {
		for p, off := range ps {
			parts = append(parts, t+"["+strconv.Itoa(int(p))+"]="+strconv.FormatInt(off, 10))
		}
	}
	sort.Strings(parts)
	return fmt.Sprint(parts)
}
