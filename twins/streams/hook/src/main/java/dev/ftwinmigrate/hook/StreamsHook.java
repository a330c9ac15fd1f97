package dev.ftwinmigrate.hook;

import java.io.Closeable;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Consumer;
import java.util.function.LongSupplier;
import java.util.function.Supplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.UnstableOffsetCommitException;
import org.apache.kafka.streams.KafkaClientSupplier;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.processor.internals.DefaultKafkaClientSupplier;

/**
 * The hook protocol (kafkahooks/PROTOCOL.md, version 3, capability "hold") for a Kafka Streams
 * application. Give {@link #clientSupplier()} to the KafkaStreams constructor and call
 * {@link #serve} before {@code start()}:
 *
 * <pre>{@code
 * StreamsHook hook = StreamsHook.forStreams(props).recordsProcessed(counter::get).build();
 * KafkaStreams streams = new KafkaStreams(topology, props, hook.clientSupplier());
 * hook.serve(HookServer.socketPath(), System.err::println);
 * streams.start();
 * }</pre>
 *
 * <p>What it promises, and how:
 * <ul>
 * <li>prepare waits for every stream thread's next commit (or its next poll with no transaction
 * open) and holds the thread there: no fetch, no processing, no transaction; the consumer's
 * heartbeat thread keeps the membership. It then reads the group's committed offsets with
 * require_stable (an Admin client, retrying UNSTABLE_OFFSET_COMMIT until the call's deadline),
 * checks them against the offsets its transactions committed, and answers them: the boundary.
 * With exactly_once_v2 it takes up to commit.interval.ms.</li>
 * <li>a copy restored from a dump of a prepared application is held as the source was: its
 * stream threads wake only at resume (or abort).</li>
 * <li>resume replaces each stream thread's producer by a new one with the same transactional.id
 * and initialises it (fencing every other copy), reads the committed offsets from the broker
 * (never a cached answer), and lets the threads go only when they equal the boundary (else 409,
 * still held). The consumer, the tasks and the stores are kept: what CRIU carried is the
 * state.</li>
 * <li>abort on a prepared source does what resume does (fencing a copy that may have got as far
 * as initialising its producer); on a running one it is a no-op.</li>
 * </ul>
 */
public final class StreamsHook implements Participant, Closeable {
    /** The capability of an application whose restored copy holds until resume (protocol 3). */
    public static final String CAP_HOLD = "hold";

    private final Map<String, Object> adminConfig;
    private final String group;
    private final String instanceId;
    private final boolean exactlyOnce;
    private final Duration commitInterval;
    private final LongSupplier processed;
    private final Supplier<Admin> admins;
    private final OffsetReader reader;
    private final Hold hold = new Hold();
    private final List<GatedProducer> producers = new CopyOnWriteArrayList<>();
    private final Consumer<String> log;
    private volatile String state = "running";
    private volatile Boundary boundary;
    private HookServer server;

    private StreamsHook(Builder b) {
        StreamsConfig sc = new StreamsConfig(b.props);
        this.group = sc.getString(StreamsConfig.APPLICATION_ID_CONFIG);
        Object iid = sc.originals().get(StreamsConfig.consumerPrefix("group.instance.id"));
        this.instanceId = iid == null ? "" : iid.toString();
        this.exactlyOnce = StreamsConfig.EXACTLY_ONCE_V2.equals(sc.getString(StreamsConfig.PROCESSING_GUARANTEE_CONFIG));
        this.commitInterval = Duration.ofMillis(sc.getLong(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG));
        this.adminConfig = sc.getAdminConfigs("ftwin-hook-admin");
        this.processed = b.processed;
        this.admins = b.admins != null ? b.admins : () -> Admin.create(adminConfig);
        this.reader = b.reader != null ? b.reader : this::adminOffsets;
        this.log = b.log;
    }

    /** A builder for the application of these Streams properties (application.id, bootstrap.servers, ...). */
    public static Builder forStreams(Properties props) {
        return new Builder(props);
    }

    public static final class Builder {
        private final Properties props;
        private LongSupplier processed = () -> 0;
        private Supplier<Admin> admins;
        private OffsetReader reader;
        private Consumer<String> log = m -> {};

        private Builder(Properties props) {
            this.props = props;
        }

        /** The records the application processed (records_processed in the boundary). */
        public Builder recordsProcessed(LongSupplier s) {
            this.processed = s;
            return this;
        }

        /** Where the Admin clients that read the committed offsets come from (tests: a MockAdminClient). */
        public Builder admin(Supplier<Admin> s) {
            this.admins = s;
            return this;
        }

        /** Reads the group's stable committed offsets instead of an Admin client (tests). */
        public Builder offsets(OffsetReader r) {
            this.reader = r;
            return this;
        }

        /** Logs what the hook does. */
        public Builder log(Consumer<String> log) {
            this.log = log;
            return this;
        }

        public StreamsHook build() {
            return new StreamsHook(this);
        }
    }

    /** The client supplier to give the KafkaStreams constructor: gated producers and main consumers. */
    public KafkaClientSupplier clientSupplier() {
        DefaultKafkaClientSupplier d = new DefaultKafkaClientSupplier();
        return new KafkaClientSupplier() {
            @Override
            public Admin getAdmin(Map<String, Object> config) {
                return d.getAdmin(config);
            }

            @Override
            public Producer<byte[], byte[]> getProducer(Map<String, Object> config) {
                GatedProducer p = GatedProducer.create(config, hold);
                producers.add(p);
                return p;
            }

            @Override
            public org.apache.kafka.clients.consumer.Consumer<byte[], byte[]> getConsumer(Map<String, Object> config) {
                return new GatedConsumer(config, hold);
            }

            @Override
            public org.apache.kafka.clients.consumer.Consumer<byte[], byte[]> getRestoreConsumer(Map<String, Object> config) {
                return d.getRestoreConsumer(config);
            }

            @Override
            public org.apache.kafka.clients.consumer.Consumer<byte[], byte[]> getGlobalConsumer(Map<String, Object> config) {
                return d.getGlobalConsumer(config);
            }
        };
    }

    /** Serves the protocol on path until {@link #close()}. */
    public synchronized HookServer serve(Path path, Consumer<String> serverLog) throws IOException {
        server = HookServer.start(this, path, serverLog);
        return server;
    }

    /** The hold, for the tests of this package. */
    Hold hold() {
        return hold;
    }

    /** Producers Streams got (tests register their own through clientSupplier). */
    List<GatedProducer> producers() {
        return producers;
    }

    @Override
    public Boundary prepare(Call call) throws HookException {
        hold.request();
        try {
            hold.awaitHeld(call);
            Offsets offs = stableOffsets(call);
            Offsets mine = hold.committed();
            Offsets broker = offs.only(mine);
            if (!broker.equals(mine)) {
                throw new HookException(500, "the broker's committed offsets " + broker + " are not those this application's transactions committed " + mine);
            }
            ConsumerGroupMetadata meta = hold.metadata().stream().findFirst().orElse(null);
            Boundary b = new Boundary(group, meta == null ? "" : meta.memberId(), instanceId,
                meta == null ? -1 : meta.generationId(), exactlyOnce, offs, processed.getAsLong(), List.of(CAP_HOLD));
            boundary = b;
            state = "prepared";
            log.accept("ftwin-hook: prepared at " + offs + " (member " + b.memberId() + " generation " + b.generation() + ")");
            return b;
        } catch (HookException | RuntimeException e) {
            if (!"prepared".equals(state)) {
                hold.release(); // a failed or cancelled prepare leaves the application running
            }
            throw e;
        }
    }

    @Override
    public Offsets resume(Call call) throws HookException {
        if (!"prepared".equals(state)) {
            throw HookException.conflict("the application is " + state + ": only a prepared (held) copy resumes; a resume is never answered twice");
        }
        reinitProducers();
        Offsets offs = stableOffsets(call);
        Boundary b = boundary;
        Offsets at = offs.only(b.offsets());
        if (!at.equals(b.offsets())) {
            throw HookException.conflict("the group's committed offsets " + at + " moved past the boundary " + b.offsets()
                + ": another copy committed; this one stays held");
        }
        state = "running";
        boundary = null;
        hold.release();
        log.accept("ftwin-hook: resumed at " + at);
        return at;
    }

    @Override
    public void abort(Call call) throws HookException {
        if (!"prepared".equals(state)) {
            return;
        }
        reinitProducers();
        state = "running";
        boundary = null;
        hold.release();
        log.accept("ftwin-hook: aborted; carrying on from the boundary");
    }

    private void reinitProducers() throws HookException {
        if (!hold.allHeld()) {
            throw new HookException(500, "the stream threads are not all held: the producers cannot be replaced");
        }
        long start = System.nanoTime();
        try {
            for (GatedProducer p : producers) {
                p.reinit(Duration.ZERO);
            }
        } catch (RuntimeException e) {
            throw new HookException(500, "re-initialise the producers: " + e, e);
        }
        log.accept(String.format("ftwin-hook: %d producers re-initialised in %d ms (every other copy fenced)", producers.size(), (System.nanoTime() - start) / 1_000_000));
    }

    /** Reads a group's committed offsets once they are stable at the broker. */
    @FunctionalInterface
    public interface OffsetReader {
        Offsets read(String group, Call call) throws HookException;
    }

    private Offsets stableOffsets(Call call) throws HookException {
        return reader.read(group, call);
    }

    /** The group's committed offsets, read with require_stable, retried while unstable until the call's deadline. */
    private Offsets adminOffsets(String group, Call call) throws HookException {
        try (Admin admin = admins.get()) {
            while (true) {
                call.check("reading the committed offsets of group " + group + " with require_stable");
                try {
                    Map<TopicPartition, OffsetAndMetadata> m = admin
                        .listConsumerGroupOffsets(group, new ListConsumerGroupOffsetsOptions().requireStable(true))
                        .partitionsToOffsetAndMetadata().get(Math.max(1, call.remainingMillis()), TimeUnit.MILLISECONDS);
                    Offsets o = new Offsets();
                    m.forEach((tp, om) -> {
                        if (om != null) {
                            o.set(tp.topic(), tp.partition(), om.offset());
                        }
                    });
                    return o;
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof UnstableOffsetCommitException)) {
                        throw new HookException(500, "read the committed offsets of group " + group + ": " + e.getCause(), e);
                    }
                    Thread.sleep(20);
                } catch (TimeoutException e) {
                    throw HookException.timeout("reading the committed offsets of group " + group);
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new HookException(503, "interrupted");
        }
    }

    @Override
    public Status status() {
        Boundary b = boundary;
        return new Status(state, b != null ? b.offsets() : hold.committed(), List.of(CAP_HOLD), exactlyOnce ? commitInterval : null);
    }

    /** Stops serving and lets any held thread go (the application is shutting down). */
    @Override
    public synchronized void close() throws IOException {
        hold.release();
        if (server != null) {
            server.close();
        }
    }
}
