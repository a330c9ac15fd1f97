package dev.ftwinmigrate.twin;

import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.function.LongSupplier;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.streams.processor.StandbyUpdateListener;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.processor.TaskId;

/**
 * What the twin's stores restored from their changelogs: a StateRestoreListener
 * (KafkaStreams#setGlobalStateRestoreListener), which Streams 4.x calls for active tasks only
 * (a restart's rebuild; a standby task promoted to active restores its changelog's tail through
 * it), and a StandbyUpdateListener (KIP-988, KafkaStreams#setStandbyUpdateListener) for the
 * records standby tasks load while they keep warm.
 *
 * <p>{@link #restoredRecords()} sums the batches restored (onBatchRestored: at the end of a
 * restoration, its totalRestored; suspended restorations count what they restored).
 * {@link #restoreMs()} is the time some changelog partition was restoring: from an onRestoreStart
 * while none was to the onRestoreEnd (or onRestoreSuspended) that leaves none, summed over such
 * periods (one period, from the first start to the last end, when all partitions restore
 * together, as at a start or a takeover).
 */
final class Restoration implements StateRestoreListener, StandbyUpdateListener {
    private final LongSupplier clockMs;
    private final Set<TopicPartition> restoring = new HashSet<>();
    private long restored, standbyRecords, busyMs, busySince = -1;

    Restoration() {
        this(System::currentTimeMillis);
    }

    Restoration(LongSupplier clockMs) {
        this.clockMs = clockMs;
    }

    @Override
    public synchronized void onRestoreStart(TopicPartition tp, String store, long startingOffset, long endingOffset) {
        if (restoring.isEmpty()) {
            busySince = clockMs.getAsLong();
        }
        restoring.add(tp);
    }

    @Override
    public synchronized void onBatchRestored(TopicPartition tp, String store, long batchEndOffset, long numRestored) {
        restored += numRestored;
    }

    @Override
    public synchronized void onRestoreEnd(TopicPartition tp, String store, long totalRestored) {
        done(tp);
    }

    @Override
    public synchronized void onRestoreSuspended(TopicPartition tp, String store, long totalRestored) {
        done(tp);
    }

    private void done(TopicPartition tp) {
        if (restoring.remove(tp) && restoring.isEmpty()) {
            busyMs += clockMs.getAsLong() - busySince;
            busySince = -1;
        }
    }

    @Override
    public void onUpdateStart(TopicPartition tp, String store, long startingOffset) {}

    @Override
    public synchronized void onBatchLoaded(TopicPartition tp, String store, TaskId task, long batchEndOffset, long batchSize, long currentEndOffset) {
        standbyRecords += batchSize;
    }

    @Override
    public void onUpdateSuspended(TopicPartition tp, String store, long storeOffset, long currentEndOffset, SuspendReason reason) {}

    /** Records restored to active tasks' stores. */
    synchronized long restoredRecords() {
        return restored;
    }

    /** Milliseconds some active task was restoring (so far, while one is). */
    synchronized long restoreMs() {
        return busyMs + (busySince >= 0 ? clockMs.getAsLong() - busySince : 0);
    }

    /** Records loaded into standby tasks' stores. */
    synchronized long standbyRecords() {
        return standbyRecords;
    }

    /**
     * The sum of the offset lags of the standby partitions' stores (store → partition → lag, as
     * KafkaStreams#allLocalStorePartitionLags), -1 when there is no standby partition or some
     * standby store partition's lag is not known yet. The twin has one sub-topology: a store's
     * partition is its task's.
     */
    static long standbyLag(Set<Integer> standbyPartitions, Map<String, Map<Integer, Long>> lags) {
        if (standbyPartitions.isEmpty() || lags == null || lags.isEmpty()) {
            return -1;
        }
        long sum = 0;
        for (Map<Integer, Long> byPartition : lags.values()) {
            for (int p : standbyPartitions) {
                Long l = byPartition.get(p);
                if (l == null || l < 0) {
                    return -1;
                }
                sum += l;
            }
        }
        return sum;
    }
}
