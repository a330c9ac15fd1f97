package dev.ftwinmigrate.twin;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.streams.processor.StandbyUpdateListener;
import org.apache.kafka.streams.processor.TaskId;
import org.junit.jupiter.api.Test;

class RestorationTest {
    static final TopicPartition P0 = new TopicPartition("g-twin-store-changelog", 0), P1 = new TopicPartition("g-twin-store-changelog", 1);

    @Test
    void recordsAndTheTimeSomePartitionWasRestoring() {
        AtomicLong now = new AtomicLong(1000);
        Restoration r = new Restoration(now::get);
        assertEquals(0, r.restoreMs());
        r.onRestoreStart(P0, "twin-store", 0, 100);
        now.set(1010);
        r.onRestoreStart(P1, "twin-store", 0, 50);
        r.onBatchRestored(P0, "twin-store", 60, 60);
        r.onBatchRestored(P1, "twin-store", 50, 50);
        now.set(1030);
        r.onRestoreEnd(P1, "twin-store", 50);
        assertEquals(30, r.restoreMs(), "P0 still restoring");
        now.set(1050);
        r.onBatchRestored(P0, "twin-store", 100, 40);
        r.onRestoreEnd(P0, "twin-store", 100);
        now.set(5000);
        assertEquals(150, r.restoredRecords());
        assertEquals(50, r.restoreMs());

        // a second restoration (a takeover later on) adds its own time, not the gap
        r.onRestoreStart(P0, "twin-store", 100, 103);
        now.set(5007);
        r.onBatchRestored(P0, "twin-store", 103, 3);
        r.onRestoreSuspended(P0, "twin-store", 3);
        r.onRestoreEnd(P0, "twin-store", 3); // no second end
        now.set(9000);
        assertEquals(153, r.restoredRecords());
        assertEquals(57, r.restoreMs());

        r.onUpdateStart(P1, "twin-store", 0);
        r.onBatchLoaded(P1, "twin-store", new TaskId(0, 1), 10, 10, 20);
        r.onBatchLoaded(P1, "twin-store", new TaskId(0, 1), 20, 10, 20);
        r.onUpdateSuspended(P1, "twin-store", 20, 20, StandbyUpdateListener.SuspendReason.PROMOTED);
        assertEquals(20, r.standbyRecords());
        assertEquals(153, r.restoredRecords(), "standby updates are not restoration");
    }

    @Test
    void standbyLagSumsTheStandbyPartitionsOnly() {
        Map<String, Map<Integer, Long>> lags = Map.of("twin-store", Map.of(0, 5L, 1, 0L, 2, 1000L));
        assertEquals(5, Restoration.standbyLag(Set.of(0, 1), lags));
        assertEquals(-1, Restoration.standbyLag(Set.of(), lags), "no standby");
        assertEquals(-1, Restoration.standbyLag(Set.of(0, 3), lags), "a standby partition's lag unknown");
        assertEquals(-1, Restoration.standbyLag(Set.of(0), Map.of()));
        assertEquals(-1, Restoration.standbyLag(Set.of(0), null));
    }
}
