package dev.ftwinmigrate.hook;

import java.time.Duration;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * The main consumer Kafka Streams gets from {@link StreamsHook#clientSupplier()}: a KafkaConsumer
 * whose poll first passes the {@link Hold}'s poll gate, so that a stream thread with no
 * transaction open stops there, before it fetches anything, while a hold is requested.
 */
final class GatedConsumer extends KafkaConsumer<byte[], byte[]> {
    private final Hold hold;

    GatedConsumer(Map<String, Object> config, Hold hold) {
        super(config, new ByteArrayDeserializer(), new ByteArrayDeserializer());
        this.hold = hold;
    }

    @Override
    public ConsumerRecords<byte[], byte[]> poll(Duration timeout) {
        hold.beforePoll(hold.requested() ? metadata() : null);
        return super.poll(timeout);
    }

    private org.apache.kafka.clients.consumer.ConsumerGroupMetadata metadata() {
        try {
            return groupMetadata();
        } catch (RuntimeException e) {
            return null; // not in a group yet
        }
    }

    @Override
    public void close(org.apache.kafka.clients.consumer.CloseOptions option) {
        hold.gone();
        super.close(option);
    }

    @Override
    public void close(Duration timeout) {
        hold.gone();
        super.close(timeout);
    }

    @Override
    public void close() {
        hold.gone();
        super.close();
    }
}
