package dev.ftwinmigrate.twin;

import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.LagInfo;
import org.apache.kafka.streams.TaskMetadata;
import org.apache.kafka.streams.ThreadMetadata;

/**
 * The instance's tasks for the status line: how many active and standby tasks its threads hold,
 * the standby stores' lag (read by {@link #pollStandbyLag} on a thread of its own, as
 * allLocalStorePartitionLags asks the brokers for the changelogs' end offsets) and what its stores
 * restored.
 */
final class Tasks {
    /** A standby lag read longer ago than this is unknown (-1). */
    static final long LAG_STALE_MS = 5000;

    final Restoration restoration;
    private final KafkaStreams streams;
    private volatile long lag = -1, lagAtMs;

    Tasks(KafkaStreams streams, Restoration restoration) {
        this.streams = streams;
        this.restoration = restoration;
    }

    /** The active and standby tasks of the instance's live threads ({0, 0} when unknown). */
    int[] counts() {
        int active = 0, standby = 0;
        try {
            for (ThreadMetadata t : streams.metadataForLocalThreads()) {
                active += t.activeTasks().size();
                standby += t.standbyTasks().size();
            }
        } catch (RuntimeException e) {
            return new int[] {0, 0};
        }
        return new int[] {active, standby};
    }

    /** The standby stores' offset lag, summed; -1 when unknown, stale or without standby tasks. */
    long standbyLag() {
        if (counts()[1] == 0 || System.currentTimeMillis() - lagAtMs > LAG_STALE_MS) {
            return -1;
        }
        return lag;
    }

    /** Reads the standby lag every second, until interrupted. */
    void pollStandbyLag() {
        while (!Thread.currentThread().isInterrupted()) {
            long l = readStandbyLag();
            lag = l;
            lagAtMs = System.currentTimeMillis();
            try {
                Thread.sleep(1000);
            } catch (InterruptedException e) {
                return;
            }
        }
    }

    private long readStandbyLag() {
        KafkaStreams.State st = streams.state();
        if (st != KafkaStreams.State.RUNNING && st != KafkaStreams.State.REBALANCING) {
            return -1;
        }
        try {
            Set<Integer> partitions = new TreeSet<>();
            for (ThreadMetadata t : streams.metadataForLocalThreads()) {
                for (TaskMetadata task : t.standbyTasks()) {
                    partitions.add(task.taskId().partition());
                }
            }
            if (partitions.isEmpty()) {
                return -1;
            }
            Map<String, Map<Integer, Long>> lags = new HashMap<>();
            for (Map.Entry<String, Map<Integer, LagInfo>> e : streams.allLocalStorePartitionLags().entrySet()) {
                Map<Integer, Long> byPartition = new HashMap<>();
                e.getValue().forEach((p, info) -> byPartition.put(p, info.offsetLag()));
                lags.put(e.getKey(), byPartition);
            }
            return Restoration.standbyLag(partitions, lags);
        } catch (RuntimeException e) {
            return -1; // not running (any more), or the end offsets not read
        }
    }
}
