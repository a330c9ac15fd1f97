package wait_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/internal/wait"
)

func TestUntilTrueAtOnce(t *testing.T) {
	calls := 0
	start := time.Now()
	err := wait.Until(context.Background(), time.Hour, func() (bool, error) { calls++; return true, nil })
	if err != nil || calls != 1 {
		t.Fatalf("Until: %v after %d calls, want nil after 1", err, calls)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a condition true at once took %s", d)
	}
}

func TestUntilPolls(t *testing.T) {
	calls := 0
	err := wait.Until(context.Background(), time.Millisecond, func() (bool, error) { calls++; return calls == 3, nil })
	if err != nil || calls != 3 {
		t.Fatalf("Until: %v after %d calls, want nil after 3", err, calls)
	}
}

func TestUntilReturnsCondError(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	err := wait.Until(context.Background(), time.Millisecond, func() (bool, error) {
		calls++
		if calls == 2 {
			return true, boom // the error wins over done
		}
		return false, nil
	})
	if err != boom || calls != 2 {
		t.Fatalf("Until: %v after %d calls, want boom after 2", err, calls)
	}
}

func TestUntilContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	calls := 0
	err := wait.Until(ctx, 5*time.Millisecond, func() (bool, error) { calls++; return false, nil })
	if !errors.Is(err, context.DeadlineExceeded) || calls < 2 {
		t.Fatalf("Until: %v after %d calls, want DeadlineExceeded after several", err, calls)
	}
}

func TestUntilCancelledBeforeStartStillCallsOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	if err := wait.Until(ctx, time.Millisecond, func() (bool, error) { calls++; return true, nil }); err != nil || calls != 1 {
		t.Fatalf("Until: %v after %d calls, want nil after 1", err, calls)
	}
	calls = 0
	if err := wait.Until(ctx, time.Millisecond, func() (bool, error) { calls++; return false, nil }); !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("Until: %v after %d calls, want Canceled after 1", err, calls)
	}
}
