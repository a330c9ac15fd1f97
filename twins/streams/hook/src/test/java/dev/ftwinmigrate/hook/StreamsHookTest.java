package dev.ftwinmigrate.hook;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.MockProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.streams.StreamsConfig;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The hold, with a stream thread simulated as Kafka Streams drives its producer (exactly_once_v2):
 * poll, begin, send, send offsets, commit, again — over a MockProducer.
 */
class StreamsHookTest {
    StreamsHook hook;
    GatedProducer producer;
    volatile MockProducer<byte[], byte[]> mock, replacement;
    final AtomicReference<Offsets> broker = new AtomicReference<>(new Offsets());
    final AtomicLong commits = new AtomicLong();
    volatile boolean stop;
    volatile boolean lie; // the broker disagrees with what the transactions committed
    volatile boolean idle; // the thread has no input: it polls and commits nothing
    Thread streamThread;

    @BeforeEach
    void setUp() {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "ftwin-twin");
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "127.0.0.1:1");
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.consumerPrefix("group.instance.id"), "twin-1");
        hook = StreamsHook.forStreams(p).offsets((g, call) -> lie ? new Offsets().set("sensors", 0, -1) : broker.get().copy()).recordsProcessed(commits::get).build();
        producer = new GatedProducer(Map.of("transactional.id", "t"), hook.hold(), c -> {
            MockProducer<byte[], byte[]> m = new MockProducer<>(true, null, new ByteArraySerializer(), new ByteArraySerializer());
            if (mock == null) {
                mock = m;
            } else {
                replacement = m;
            }
            return m;
        });
        hook.producers().add(producer);
        producer.initTransactions();
        streamThread = new Thread(this::streamLoop, "stream-thread-1");
        streamThread.start();
    }

    @AfterEach
    void tearDown() throws Exception {
        stop = true;
        hook.close();
        streamThread.join(5000);
    }

    /** What a Streams thread does with its clients, one commit per loop. */
    void streamLoop() {
        long offset = 0;
        ConsumerGroupMetadata meta = new ConsumerGroupMetadata("ftwin-twin", 3, "member-a", java.util.Optional.of("twin-1"));
        while (!stop) {
            hook.hold().beforePoll(meta); // GatedConsumer.poll
            if (stop) {
                return;
            }
            if (idle) {
                sleep(5);
                continue;
            }
            producer.beginTransaction(); // Streams begins it at the first send
            producer.send(new ProducerRecord<>("twin-state", new byte[] {1}));
            offset += 10;
            producer.sendOffsetsToTransaction(Map.of(new TopicPartition("sensors", 0), new OffsetAndMetadata(offset)), meta);
            // The broker holds the offsets once the commit is done, before commitTransaction
            // returns (and the hold may stop the thread inside it).
            broker.set(broker.get().copy().set("sensors", 0, offset));
            commits.incrementAndGet();
            producer.commitTransaction();
            sleep(2);
        }
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Test
    void prepareHoldsTheThreadAfterACommitAndResumeLetsItGo() throws Exception {
        while (commits.get() < 3) {
            Thread.sleep(1);
        }
        Boundary b = hook.prepare(Call.within(5000, 3));
        long at = commits.get();
        Thread.sleep(100);
        assertEquals(at, commits.get(), "the thread committed while prepared");
        assertFalse(mock.transactionInFlight(), "a transaction is open at the boundary");
        assertEquals(broker.get(), b.offsets());
        assertEquals("member-a", b.memberId());
        assertEquals(3, b.generation());
        assertEquals("twin-1", b.instanceId());
        assertTrue(b.transactional());
        assertEquals("prepared", hook.status().state());
        assertEquals(b, hook.prepare(Call.within(5000, 3)), "a second prepare answers the same boundary");

        Offsets resumed = hook.resume(Call.within(5000, 3));
        assertEquals(b.offsets(), resumed);
        while (commits.get() < at + 3) {
            Thread.sleep(1);
        }
        assertEquals("running", hook.status().state());
        HookException again = assertThrows(HookException.class, () -> hook.resume(Call.within(5000, 3)));
        assertEquals(409, again.status(), "a second resume is answered from a cache");
    }

    @Test
    void anIdleThreadIsHeldAtItsPoll() throws Exception {
        while (commits.get() < 1) {
            Thread.sleep(1);
        }
        idle = true;
        Boundary b = hook.prepare(Call.within(5000, 3));
        assertEquals(broker.get(), b.offsets());
        hook.abort(Call.within(5000, 3));
        assertEquals("running", hook.status().state());
        hook.abort(Call.within(5000, 3)); // a no-op when running
    }

    @Test
    void resumeRefusesOffsetsPastTheBoundaryAndStaysHeld() throws Exception {
        while (commits.get() < 1) {
            Thread.sleep(1);
        }
        Boundary b = hook.prepare(Call.within(5000, 3));
        broker.set(b.offsets().copy().set("sensors", 0, b.offsets().get("sensors", 0) + 5)); // another copy committed
        HookException e = assertThrows(HookException.class, () -> hook.resume(Call.within(5000, 3)));
        assertEquals(409, e.status());
        assertTrue(e.getMessage().contains("moved past the boundary"), e.getMessage());
        long at = commits.get();
        Thread.sleep(50);
        assertEquals(at, commits.get(), "a refused copy ran");
        assertEquals("prepared", hook.status().state());
    }

    @Test
    void aFailedPrepareLetsTheApplicationRun() throws Exception {
        while (commits.get() < 1) {
            Thread.sleep(1);
        }
        lie = true;
        HookException e = assertThrows(HookException.class, () -> hook.prepare(Call.within(2000, 3)));
        assertEquals(500, e.status(), e.getMessage());
        assertTrue(e.getMessage().contains("are not those this application's transactions committed"), e.getMessage());
        long at = commits.get();
        while (commits.get() < at + 2) {
            Thread.sleep(1); // released: it commits again
        }
        assertEquals("running", hook.status().state());
    }

    @Test
    void reinitReplacesTheProducer() throws Exception {
        while (commits.get() < 1) {
            Thread.sleep(1);
        }
        hook.prepare(Call.within(5000, 3));
        hook.resume(Call.within(5000, 3));
        assertTrue(mock.closed(), "the old producer was not closed");
        assertTrue(replacement != null && replacement.transactionInitialized(), "the new producer was not initialised (no fencing)");
        long at = commits.get();
        while (commits.get() < at + 2) {
            Thread.sleep(1);
        }
        // MockProducer moves a transaction's records to its history when it commits.
        assertFalse(replacement.history().isEmpty(), "the thread does not commit through the new producer");
    }
}
