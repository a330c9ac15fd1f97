package dev.ftwinmigrate.twin;

import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.config.TopicConfig;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The twin's topology, in the DSL: readings keyed by device are stamped with where they were read
 * (partition, offset), grouped by device (the key: no repartition) and aggregated into the
 * in-memory store {@value #STORE} (changelogged), whose every update (caching off: one per
 * reading) becomes an output record on the twin-state topic.
 *
 * <p>The store's changelog topic takes the broker's defaults unless given a configuration
 * ({@link #changelogConfig}: small segments, cleaned eagerly, for a short restore).
 */
public final class TwinTopology {
    public static final String STORE = "twin-store";

    public static final Serde<Reading> READING = Serdes.serdeFrom((t, r) -> r == null ? null : r.toBytes(), (t, b) -> Reading.fromBytes(b));
    public static final Serde<DeviceState> STATE = Serdes.serdeFrom((t, s) -> s == null ? null : s.toBytes(), (t, b) -> DeviceState.fromBytes(b));

    /** What the topology counts: records processed (outputs) and malformed inputs skipped. */
    public static final class Counters {
        public final AtomicLong processed = new AtomicLong(), skipped = new AtomicLong(), anomalies = new AtomicLong();
    }

    private TwinTopology() {}

    /** The topology from input to output, the store's changelog with the broker's defaults. */
    public static Topology build(String input, String output, int window, String instance, Counters counters) {
        return build(input, output, window, instance, counters, Map.of());
    }

    /**
     * The changelog topic configuration of a store restored quickly: segments of segmentBytes
     * (rolled at least every minute), cleaned as soon as 1% of the log is dirty, so that the
     * compacted changelog keeps about one record per device beyond the active segment (the
     * broker's defaults, 1 GiB segments kept 7 days and a dirty ratio of 0.5, leave every update
     * since the start to replay). Empty for segmentBytes <= 0: the broker's defaults.
     *
     * <p>The broker refuses (InvalidConfigurationException on the changelog's creation, which
     * stops the application) a segment.bytes below its validator's minimum: in Kafka 4.4
     * (LogConfig: segment.bytes, an int, atLeast(1048576), default 1 GiB; KIP-1030 raised the
     * minimum from 14 bytes to 1 MiB in 4.0, smaller segments only through the test-only
     * internal.segment.bytes) that is 1 MiB; segment.ms must be at least 1 and
     * min.cleanable.dirty.ratio in [0, 1]. The broker's log.segment.bytes default has the same
     * 1 MiB minimum. Older brokers accepted down to 14 bytes.
     */
    public static Map<String, String> changelogConfig(int segmentBytes) {
        if (segmentBytes <= 0) {
            return Map.of();
        }
        return Map.of(TopicConfig.SEGMENT_BYTES_CONFIG, Integer.toString(segmentBytes),
            TopicConfig.MIN_CLEANABLE_DIRTY_RATIO_CONFIG, "0.01",
            TopicConfig.SEGMENT_MS_CONFIG, "60000");
    }

    /** The topology from input to output, the store's changelog topic with the configuration changelog (empty: the broker's defaults). */
    public static Topology build(String input, String output, int window, String instance, Counters counters, Map<String, String> changelog) {
        Materialized<String, DeviceState, KeyValueStore<Bytes, byte[]>> store =
            Materialized.<String, DeviceState>as(Stores.inMemoryKeyValueStore(STORE))
                .withKeySerde(Serdes.String()).withValueSerde(STATE).withCachingDisabled();
        if (!changelog.isEmpty()) {
            store = store.withLoggingEnabled(changelog);
        }
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .processValues(() -> new Stamp(counters))
            .filter((k, r) -> r != null)
            .groupByKey(Grouped.with(Serdes.String(), READING))
            .aggregate(() -> new DeviceState(window), (dev, r, st) -> st.apply(r), store)
            .toStream()
            .mapValues(st -> {
                counters.processed.incrementAndGet();
                if (st.outAnomaly) {
                    counters.anomalies.incrementAndGet();
                }
                return st.output(instance);
            })
            .to(output, Produced.with(Serdes.String(), Serdes.String()));
        return b.build();
    }

    /** Parses a reading and stamps it with its input partition and offset and the thread's time; null for a malformed one. */
    static final class Stamp implements FixedKeyProcessor<String, String, Reading> {
        private final Counters counters;
        private FixedKeyProcessorContext<String, Reading> ctx;

        Stamp(Counters counters) {
            this.counters = counters;
        }

        @Override
        public void init(FixedKeyProcessorContext<String, Reading> context) {
            this.ctx = context;
        }

        @Override
        public void process(FixedKeyRecord<String, String> rec) {
            int partition = ctx.recordMetadata().map(m -> m.partition()).orElse(-1);
            long offset = ctx.recordMetadata().map(m -> m.offset()).orElse(-1L);
            Reading r = Reading.parse(rec.value(), partition, offset, ctx.currentSystemTimeMs() * 1_000_000L);
            if (r == null) {
                counters.skipped.incrementAndGet();
            }
            ctx.forward(rec.withValue(r));
        }
    }

}
