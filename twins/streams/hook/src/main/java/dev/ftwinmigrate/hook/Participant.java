package dev.ftwinmigrate.hook;

/**
 * The application side of the hook protocol (kafkahooks/PROTOCOL.md). {@link HookServer}
 * serialises prepare, resume and abort (a second call waits for the first, within its own
 * deadline); status runs at any time. Each call gets a {@link Call}: its deadline and whether
 * its client went away.
 */
public interface Participant {
    /** Brings the application to a boundary and holds it there; again while prepared, the same boundary. */
    Boundary prepare(Call call) throws HookException;

    /** On the restored copy: fences every other copy, reads the committed offsets from the broker, lets the application go. */
    Offsets resume(Call call) throws HookException;

    /** On the source after a rollback: carries on from the boundary. A no-op when running. */
    void abort(Call call) throws HookException;

    /** The state and what the application knows of its committed offsets. */
    Status status();
}
