package migrate

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
)

// DefaultHookSocket is where an application's migration hook listens inside its container
// (see package kafkahooks for the protocol).
const DefaultHookSocket = kafkahooks.DefaultSocketPath

// BoundaryCheck records how the broker's view matched the application's boundary.
type BoundaryCheck struct {
	// CommittedBefore: the group's committed offsets, read from the broker before the
	// checkpoint, equal the boundary.
	CommittedBefore bool `json:"committed_before_checkpoint_match"`
	// ResumedAt is where the restored copy says it resumed fetching; ResumedMatch says it equals
	// the boundary.
	ResumedAt    kafkahooks.Offsets `json:"resumed_at,omitempty"`
	ResumedMatch bool               `json:"resumed_match"`
}

// appHook is a container's hook socket: prepare and abort go to the source directly through
// /proc/PID/root, resume to the restored copy through the agent's relay.
type appHook struct {
	*kafkahooks.Client
	socket string
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
	return &appHook{Client: kafkahooks.Dial(p), socket: socket}
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
	out := kafkahooks.Offsets{}
	resp.Each(func(o kadm.OffsetResponse) {
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.At
	})
	return out, nil
}

// OffsetsString renders offsets stably: topic[partition]=offset, sorted.
func OffsetsString(o kafkahooks.Offsets) string {
	var parts []string
	for t, ps := range o {
		for p, off := range ps {
			parts = append(parts, t+"["+strconv.Itoa(int(p))+"]="+strconv.FormatInt(off, 10))
		}
	}
	sort.Strings(parts)
	return fmt.Sprint(parts)
}

func offsetsEqual(a, b kafkahooks.Offsets) bool { return OffsetsString(a) == OffsetsString(b) }
