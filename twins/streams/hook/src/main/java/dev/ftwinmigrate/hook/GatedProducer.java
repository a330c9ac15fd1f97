package dev.ftwinmigrate.hook;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Future;
import java.util.function.Function;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.Callback;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.metrics.KafkaMetric;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The producer Kafka Streams gets from {@link StreamsHook#clientSupplier()}: a KafkaProducer it
 * delegates to, which tells the {@link Hold} when a transaction begins and ends (a thread held
 * right after its commit has none open), and which {@link #reinit} replaces by a new producer of
 * the same transactional.id, initialised — the epoch bump that fences every other copy — without
 * Kafka Streams noticing: its tasks, stores and consumer stay as they are.
 */
final class GatedProducer implements Producer<byte[], byte[]> {
    private final Map<String, Object> config;
    private final Hold hold;
    private final boolean transactional;
    private final Function<Map<String, Object>, Producer<byte[], byte[]>> factory;
    private volatile Producer<byte[], byte[]> delegate;
    private volatile boolean initialised;

    GatedProducer(Map<String, Object> config, Hold hold, Function<Map<String, Object>, Producer<byte[], byte[]>> factory) {
        this.config = Map.copyOf(config);
        this.hold = hold;
        this.transactional = config.get("transactional.id") != null;
        this.factory = factory;
        this.delegate = factory.apply(this.config);
    }

    static GatedProducer create(Map<String, Object> config, Hold hold) {
        return new GatedProducer(config, hold, c -> new KafkaProducer<>(c, new ByteArraySerializer(), new ByteArraySerializer()));
    }

    boolean transactional() {
        return transactional;
    }

    /**
     * Replaces the producer by a new one with the same configuration and, when transactional,
     * initialises it: InitProducerId bumps the epoch of the transactional id, fencing every other
     * process holding it and aborting a transaction one left open. Only while the hold holds the
     * thread that uses it (no transaction of ours open).
     */
    void reinit(Duration closeOld) {
        Producer<byte[], byte[]> old = delegate;
        Producer<byte[], byte[]> fresh = factory.apply(config);
        if (transactional && initialised) {
            fresh.initTransactions();
        }
        delegate = fresh;
        try {
            old.close(closeOld);
        } catch (RuntimeException e) {
            // its connections were restored closed; it goes anyway
        }
    }

    @Override
    public void initTransactions() {
        delegate.initTransactions();
        initialised = true;
    }

    @Override
    public void beginTransaction() throws ProducerFencedException {
        delegate.beginTransaction();
        hold.begun();
    }

    @Override
    public void sendOffsetsToTransaction(Map<TopicPartition, OffsetAndMetadata> offsets, ConsumerGroupMetadata groupMetadata) {
        delegate.sendOffsetsToTransaction(offsets, groupMetadata);
        Offsets o = new Offsets();
        offsets.forEach((tp, om) -> o.set(tp.topic(), tp.partition(), om.offset()));
        hold.offsets(o, groupMetadata);
    }

    @Override
    public void commitTransaction() throws ProducerFencedException {
        delegate.commitTransaction();
        hold.ended(true); // a requested hold stops the stream thread here, with no transaction open
    }

    @Override
    public void abortTransaction() throws ProducerFencedException {
        try {
            delegate.abortTransaction();
        } finally {
            hold.ended(false);
        }
    }

    @Override
    public Future<RecordMetadata> send(ProducerRecord<byte[], byte[]> record) {
        return delegate.send(record);
    }

    @Override
    public Future<RecordMetadata> send(ProducerRecord<byte[], byte[]> record, Callback callback) {
        return delegate.send(record, callback);
    }

    @Override
    public void flush() {
        delegate.flush();
    }

    @Override
    public List<PartitionInfo> partitionsFor(String topic) {
        return delegate.partitionsFor(topic);
    }

    @Override
    public Map<MetricName, ? extends Metric> metrics() {
        return delegate.metrics();
    }

    @Override
    public void registerMetricForSubscription(KafkaMetric metric) {
        delegate.registerMetricForSubscription(metric);
    }

    @Override
    public void unregisterMetricFromSubscription(KafkaMetric metric) {
        delegate.unregisterMetricFromSubscription(metric);
    }

    @Override
    public Uuid clientInstanceId(Duration timeout) {
        return delegate.clientInstanceId(timeout);
    }

    @Override
    public void close() {
        delegate.close();
    }

    @Override
    public void close(Duration timeout) {
        delegate.close(timeout);
    }
}
