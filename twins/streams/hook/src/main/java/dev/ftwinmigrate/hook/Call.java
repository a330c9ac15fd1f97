package dev.ftwinmigrate.hook;

/** One call in progress: its deadline (the client's, bounded by the server's) and its cancellation (the client closed the connection). */
public final class Call {
    private final long deadlineNanos;
    private volatile boolean cancelled;
    private final int spoken;

    Call(long deadlineNanos, int spoken) {
        this.deadlineNanos = deadlineNanos;
        this.spoken = spoken;
    }

    /** A call with timeoutMillis to run, speaking version spoken (for tests and embedders). */
    public static Call within(long timeoutMillis, int spoken) {
        return new Call(System.nanoTime() + timeoutMillis * 1_000_000L, spoken);
    }

    /** The protocol version the request speaks. */
    public int spoken() {
        return spoken;
    }

    /** Milliseconds left before the deadline (0 when past it). */
    public long remainingMillis() {
        return Math.max(0, (deadlineNanos - System.nanoTime()) / 1_000_000L);
    }

    /** Whether the client went away. */
    public boolean cancelled() {
        return cancelled;
    }

    void cancel() {
        cancelled = true;
    }

    /** Throws 504 when past the deadline and 503 when cancelled; says what was being waited for. */
    public void check(String waitingFor) throws HookException {
        if (cancelled) {
            throw new HookException(503, "cancelled (the client closed the connection) while " + waitingFor);
        }
        if (remainingMillis() == 0) {
            throw HookException.timeout("out of time while " + waitingFor);
        }
    }
}
