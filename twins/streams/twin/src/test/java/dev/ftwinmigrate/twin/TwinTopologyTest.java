package dev.ftwinmigrate.twin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Properties;
import java.time.Duration;
import java.time.Instant;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.state.KeyValueStore;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class TwinTopologyTest {
    TopologyTestDriver driver;
    TestInputTopic<String, String> in;
    TestOutputTopic<String, String> out;
    TwinTopology.Counters counters;

    @BeforeEach
    void setUp() {
        counters = new TwinTopology.Counters();
        Properties p = StreamsTwin.props(StreamsTwin.flags(new String[] {"-brokers", "dummy:1234", "-group", "t"}));
        p.put(StreamsConfig.STATE_DIR_CONFIG, System.getProperty("java.io.tmpdir") + "/twin-topology-test");
        driver = new TopologyTestDriver(TwinTopology.build("sensors", "twin-state", 10, "inst-a", counters), p, Instant.ofEpochMilli(1_000));
        in = driver.createInputTopic("sensors", new StringSerializer(), new StringSerializer());
        out = driver.createOutputTopic("twin-state", new StringDeserializer(), new StringDeserializer());
    }

    @AfterEach
    void tearDown() {
        driver.close();
    }

    static String reading(String dev, long seq, double temp) {
        return "{\"device\":\"" + dev + "\",\"seq\":" + seq + ",\"ts_ns\":" + (seq * 1000 + 7) + ",\"temp\":" + temp + ",\"humidity\":55.5}";
    }

    @Test
    void oneOutputPerReadingWithWhatTheVerifierNeeds() {
        in.pipeInput("d-0", reading("d-0", 1, 20.0));
        in.pipeInput("d-1", reading("d-1", 1, 30.0));
        in.pipeInput("d-0", reading("d-0", 2, 22.0));
        List<KeyValue<String, String>> got = out.readKeyValuesToList();
        assertEquals(3, got.size());
        assertEquals("d-0", got.get(0).key);
        String third = got.get(2).value;
        assertTrue(third.startsWith("{\"device\":\"d-0\",\"seq\":2,\"input_partition\":0,\"input_offset\":2,\"mean\":20.0,\"stddev\":0.0,\"baseline\":20.0,\"anomaly\":false,"), third);
        assertTrue(third.contains("\"sensor_ns\":2007,"), third);
        assertTrue(third.contains("\"processed_ns\":1000000000,"), third); // the thread's wall clock, in ns
        assertTrue(third.endsWith("\"instance\":\"inst-a\"}"), third);
        assertEquals(3, counters.processed.get());
    }

    @Test
    void processedIsTheThreadsWallClock() {
        in.pipeInput("d-0", reading("d-0", 1, 20.0));
        driver.advanceWallClockTime(Duration.ofMillis(250));
        in.pipeInput("d-0", reading("d-0", 2, 20.0));
        List<String> vals = out.readValuesToList();
        assertTrue(vals.get(0).contains("\"processed_ns\":1000000000,"), vals.get(0));
        assertTrue(vals.get(1).contains("\"processed_ns\":1250000000,"), vals.get(1));
    }

    @Test
    void rollingStatisticsAndAnomalyFlag() {
        for (int s = 1; s <= 12; s++) {
            in.pipeInput("d-0", reading("d-0", s, s % 2 == 0 ? 20.0 : 21.0));
        }
        in.pipeInput("d-0", reading("d-0", 13, 40.0)); // a spike
        in.pipeInput("d-0", reading("d-0", 14, 20.5));
        List<String> vals = out.readValuesToList();
        assertEquals(14, vals.size());
        String spike = vals.get(12);
        assertTrue(spike.contains("\"seq\":13,") && spike.contains("\"mean\":20.5,") && spike.contains("\"stddev\":0.5,"), spike);
        assertTrue(spike.contains("\"anomaly\":true"), spike);
        assertFalse(vals.get(13).contains("\"anomaly\":true"), vals.get(13));
        assertFalse(vals.get(5).contains("\"anomaly\":true"), "an anomaly before the window holds 8 readings");
        assertEquals(1, counters.anomalies.get());

        KeyValueStore<String, DeviceState> store = driver.getKeyValueStore(TwinTopology.STORE);
        DeviceState st = store.get("d-0");
        assertEquals(14, st.lastSeq);
        assertEquals(14, st.count);
        assertEquals(10, st.ringN, "the ring holds the window");
        assertEquals(20.5, st.lastTemp);
        assertEquals(1, st.anomalies);
    }

    @Test
    void aReplayedReadingLeavesTheStateAndMalformedInputIsSkipped() {
        in.pipeInput("d-0", reading("d-0", 1, 20.0));
        in.pipeInput("d-0", reading("d-0", 2, 21.0));
        in.pipeInput("d-0", reading("d-0", 2, 99.0)); // the same sequence number again
        in.pipeInput("d-0", "not json");
        assertEquals(3, out.readValuesToList().size());
        DeviceState st = driver.<String, DeviceState>getKeyValueStore(TwinTopology.STORE).get("d-0");
        assertEquals(2, st.count);
        assertEquals(21.0, st.lastTemp);
        assertEquals(1, counters.skipped.get());
    }

    @Test
    void stateSurvivesItsSerde() {
        DeviceState s = new DeviceState(5);
        for (int i = 1; i <= 7; i++) {
            s.apply(new Reading("d-3", i, i * 10L, 18 + i, 50, 2, 100 + i, 7));
        }
        DeviceState back = DeviceState.fromBytes(s.toBytes());
        assertEquals(s.output("x"), back.output("x"));
        assertEquals(s.apply(new Reading("d-3", 8, 80, 30, 50, 2, 108, 9)).output("x"),
            back.apply(new Reading("d-3", 8, 80, 30, 50, 2, 108, 9)).output("x"));
        Reading r = new Reading("d-9", 4, 5, 6.5, 7.25, 1, 99, 11);
        assertEquals(r, Reading.fromBytes(r.toBytes()));
        assertEquals(r, Reading.parse(reading("d-9", 4, 6.5).replace("\"ts_ns\":4007", "\"ts_ns\":5").replace("55.5", "7.25"), 1, 99, 11));
    }

    @Test
    void flags() {
        assertEquals("5000", StreamsTwin.flags(new String[] {"-commit-interval-ms", "5000"}).get("commit-interval-ms"));
        assertEquals("x", StreamsTwin.flags(new String[] {"--group=x"}).get("group"));
        Properties p = StreamsTwin.props(StreamsTwin.flags(new String[] {"-instance-id", "twin-7"}));
        assertEquals("twin-7", p.get("main.consumer.group.instance.id") == null ? p.get("consumer.group.instance.id") : p.get("main.consumer.group.instance.id"));
        assertEquals(StreamsConfig.EXACTLY_ONCE_V2, p.get(StreamsConfig.PROCESSING_GUARANTEE_CONFIG));
    }
}
