package migrate

import (
	"context"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
)

// SourceNetwork is the source host's side of a container address that moves with the
// container (Options.Network; agent.Network is the target's).
type SourceNetwork interface {
	// Address returns container id's own address, or nil when it is on its host's network.
	Address(ctx context.Context, ns, id string) (*agent.ContainerAddress, error)
	// Disconnect takes the source's copy of the address off the network; Reconnect puts it
	// back (a rollback: it announces it again).
	Disconnect(ctx context.Context, ns, id string) error
	Reconnect(ctx context.Context, ns, id string) error
	// Remove removes the source's network namespace of the container (the commit).
	Remove(ctx context.Context, ns, id string) error
}
