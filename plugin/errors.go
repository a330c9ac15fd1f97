package plugin

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/ftwin-migrate/ftwin-migrate/migrate"
)

// migrationError gives the error a migration ended with its errdefs class, from the result
// its report names, so that errgrpc maps it to a gRPC status code the way containerd maps its
// own errors:
//
//	result                                  class (gRPC code)
//	rolled back                             the cause's own class if it has one (NOT_FOUND for
//	                                        a container that does not exist, INVALID_ARGUMENT,
//	                                        FAILED_PRECONDITION, DEADLINE_EXCEEDED, CANCELED...),
//	                                        else ErrAborted (ABORTED): the source runs, nothing
//	                                        is left on the target, the call may be retried
//	rollback failed, commit unconfirmed     ErrInternal (INTERNAL): settle it with Recover
//	none (refused before the pipeline ran)  the cause's own class, else UNKNOWN
func migrationError(err error, rep *migrate.Report) error {
	if err == nil {
		return nil
	}
	if rep == nil {
		return err
	}
	switch rep.Result {
	case migrate.RollbackFailed, migrate.CommitUnconfirmed:
		return fmt.Errorf("%w: %w", errdefs.ErrInternal, err)
	case migrate.RolledBack:
		if errdefs.Resolve(err) == errdefs.ErrUnknown {
			return fmt.Errorf("%w: %w", errdefs.ErrAborted, err)
		}
	}
	return err
}

// toGRPC maps err to a gRPC status error as containerd's services do (errgrpc.ToGRPC).
func toGRPC(err error) error { return errgrpc.ToGRPC(err) }

// invalid marks a bad request.
func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errdefs.ErrInvalidArgument, fmt.Sprintf(format, a...))
}
