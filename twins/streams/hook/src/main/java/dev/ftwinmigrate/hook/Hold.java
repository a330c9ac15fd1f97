package dev.ftwinmigrate.hook;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;

/**
 * Where the stream threads stop while the application is prepared. A stream thread stops only at
 * a point with no transaction open: right after its producer committed one (the commit gate), or
 * on its way into the consumer's poll with none open (the poll gate, for a thread with nothing to
 * commit). While stopped it neither polls (so its consumer fetches nothing; the consumer's
 * heartbeat thread keeps the membership), nor processes, produces or commits. The memory of a
 * held thread is what CRIU dumps, so the copy restored from that dump starts held too: its
 * threads wake up only when {@link #release()} runs there — at resume or abort.
 */
final class Hold {
    private final Object lock = new Object();
    private final Map<Thread, PerThread> threads = new IdentityHashMap<>();
    private boolean requested;

    static final class PerThread {
        boolean txnOpen;
        boolean held;
        ConsumerGroupMetadata meta;
        Offsets pending = new Offsets();
    }

    private final Offsets committed = new Offsets();

    private PerThread me() {
        return threads.computeIfAbsent(Thread.currentThread(), t -> new PerThread());
    }

    /** A stream thread is about to poll its consumer. */
    void beforePoll(ConsumerGroupMetadata meta) {
        synchronized (lock) {
            PerThread pt = me();
            if (meta != null) {
                pt.meta = meta;
            }
            if (requested && !pt.txnOpen) {
                park(pt);
            }
        }
    }

    /** The stream thread's producer began a transaction. */
    void begun() {
        synchronized (lock) {
            me().txnOpen = true;
        }
    }

    /** The stream thread's producer sends offsets (and the group's metadata) within its transaction. */
    void offsets(Offsets o, ConsumerGroupMetadata meta) {
        synchronized (lock) {
            PerThread pt = me();
            pt.pending.merge(o);
            pt.meta = meta;
        }
    }

    /** The stream thread's transaction ended; after a commit, a requested hold stops it here. */
    void ended(boolean committed) {
        synchronized (lock) {
            PerThread pt = me();
            pt.txnOpen = false;
            if (committed) {
                this.committed.merge(pt.pending);
            }
            pt.pending = new Offsets();
            if (committed && requested) {
                park(pt);
            }
        }
    }

    /** The thread is gone (its producer or consumer closed). */
    void gone() {
        synchronized (lock) {
            threads.remove(Thread.currentThread());
            lock.notifyAll();
        }
    }

    private void park(PerThread pt) {
        pt.held = true;
        lock.notifyAll();
        try {
            while (requested) {
                lock.wait();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt(); // let the thread go (a shutdown): it stops holding
        } finally {
            pt.held = false;
            lock.notifyAll();
        }
    }

    /** Asks every stream thread to stop at its next point with no transaction open. */
    void request() {
        synchronized (lock) {
            requested = true;
            lock.notifyAll();
        }
    }

    /** Whether a hold is requested (prepare ran and nothing released it). */
    boolean requested() {
        synchronized (lock) {
            return requested;
        }
    }

    /** Waits until every live stream thread (at least one) is held; false when the time ran out. */
    boolean awaitHeld(Call call) throws HookException {
        synchronized (lock) {
            while (true) {
                threads.keySet().removeIf(t -> !t.isAlive());
                if (!threads.isEmpty() && threads.values().stream().allMatch(pt -> pt.held)) {
                    return true;
                }
                call.check("waiting for the stream threads' next commit (" + describeLocked() + ")");
                try {
                    lock.wait(Math.max(1, Math.min(50, call.remainingMillis())));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new HookException(503, "interrupted");
                }
            }
        }
    }

    /** Lets every held thread go. */
    void release() {
        synchronized (lock) {
            requested = false;
            lock.notifyAll();
        }
    }

    /** Whether every live stream thread is held now. */
    boolean allHeld() {
        synchronized (lock) {
            return !threads.isEmpty() && threads.values().stream().allMatch(pt -> pt.held);
        }
    }

    /** The offsets the threads' transactions committed since the process started (merged). */
    Offsets committed() {
        synchronized (lock) {
            return committed.copy();
        }
    }

    /** The group metadata the threads last saw. */
    List<ConsumerGroupMetadata> metadata() {
        synchronized (lock) {
            List<ConsumerGroupMetadata> out = new ArrayList<>();
            threads.values().forEach(pt -> {
                if (pt.meta != null) {
                    out.add(pt.meta);
                }
            });
            return out;
        }
    }

    private String describeLocked() {
        long held = threads.values().stream().filter(pt -> pt.held).count();
        long open = threads.values().stream().filter(pt -> pt.txnOpen).count();
        return held + " of " + threads.size() + " stream threads held, " + open + " with a transaction open";
    }
}
