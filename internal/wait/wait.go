// Package wait polls a condition until it holds: the one poll loop of the project.
package wait

import (
	"context"
	"time"
)

// Until calls cond at once, then every interval, until it returns true (Until returns nil) or
// an error (Until returns it as it is), or until ctx is done between two calls (Until returns
// ctx.Err(); a cond that talks to something should use the same ctx, so it returns early too).
func Until(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	for {
		done, err := cond()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
