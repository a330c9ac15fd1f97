package dev.ftwinmigrate.twin;

import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.Stores;

/**
 * The twin's topology, in the DSL: readings keyed by device are stamped with where they were read
 * (partition, offset), grouped by device (the key: no repartition) and aggregated into the
 * in-memory store {@value #STORE} (changelogged), whose every update (caching off: one per
 * reading) becomes an output record on the twin-state topic.
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

    /** The topology from input to output. */
    public static Topology build(String input, String output, int window, String instance, Counters counters) {
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .processValues(() -> new Stamp(counters))
            .filter((k, r) -> r != null)
            .groupByKey(Grouped.with(Serdes.String(), READING))
            .aggregate(() -> new DeviceState(window), (dev, r, st) -> st.apply(r),
                Materialized.<String, DeviceState>as(Stores.inMemoryKeyValueStore(STORE))
                    .withKeySerde(Serdes.String()).withValueSerde(STATE).withCachingDisabled())
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
