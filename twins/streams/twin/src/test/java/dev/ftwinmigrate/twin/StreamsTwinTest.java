package dev.ftwinmigrate.twin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.Field;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.internals.InternalTopicConfig;
import org.apache.kafka.streams.processor.internals.InternalTopologyBuilder;
import org.junit.jupiter.api.Test;

class StreamsTwinTest {
    static Properties props(String... args) {
        return StreamsTwin.props(StreamsTwin.flags(args));
    }

    @Test
    void theDefaultsLeaveStreamsAsItWas() {
        Map<String, String> f = StreamsTwin.flags(new String[0]);
        assertEquals("0", f.get("standby-replicas"));
        assertEquals("", f.get("role"));
        assertEquals("false", f.get("leave-on-close"));
        assertEquals("0", f.get("changelog-segment-bytes"));
        Properties p = StreamsTwin.props(f);
        assertEquals("0", p.get(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG)); // Streams' default
        assertNull(p.get(StreamsConfig.TASK_ASSIGNOR_CLASS_CONFIG));
        assertTrue(p.stringPropertyNames().stream().noneMatch(k -> k.startsWith(StreamsConfig.CLIENT_TAG_PREFIX)));
        assertFalse(StreamsTwin.leaveOnClose(f));
        assertEquals(Map.of(), StreamsTwin.changelog(f));
        assertEquals(0, new StreamsConfig(p).getInt(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG));
    }

    @Test
    void aRoleTagsTheClientAndPinsTheTasks() {
        Properties p = props("-role", "standby", "-standby-replicas", "1");
        assertEquals("standby", p.get("client.tag.ftwin.role"));
        assertEquals(PinnedTaskAssignor.class.getName(), p.get(StreamsConfig.TASK_ASSIGNOR_CLASS_CONFIG));
        StreamsConfig sc = new StreamsConfig(p);
        assertEquals(1, sc.getInt(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG));
        assertEquals(Map.of("ftwin.role", "standby"), sc.getClientTags());
        assertEquals("active", props("--role=active").get("client.tag.ftwin.role"));
        assertTrue(StreamsTwin.leaveOnClose(StreamsTwin.flags(new String[] {"-leave-on-close", "true"})));
    }

    @Test
    void badValuesAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> props("-role", "leader"));
        assertThrows(IllegalArgumentException.class, () -> props("-standby-replicas", "-1"));
        assertThrows(IllegalArgumentException.class, () -> props("-standby-replicas", "one"));
        assertThrows(IllegalArgumentException.class, () -> props("-leave-on-close", "yes"));
        assertThrows(IllegalArgumentException.class, () -> props("-changelog-segment-bytes", "4294967296"));
        assertThrows(IllegalArgumentException.class, () -> StreamsTwin.flags(new String[] {"-standbys", "1"}));
    }

    @Test
    void theChangelogTopicGetsTheSegmentConfiguration() throws Exception {
        Map<String, String> want = Map.of("segment.bytes", "1048576", "min.cleanable.dirty.ratio", "0.01", "segment.ms", "60000");
        assertEquals(want, StreamsTwin.changelog(StreamsTwin.flags(new String[] {"-changelog-segment-bytes", "1048576"})));
        Map<String, String> got = changelogTopicConfig(TwinTopology.build("in", "out", 10, "i", new TwinTopology.Counters(), want));
        assertEquals("1048576", got.get("segment.bytes"));
        assertEquals("0.01", got.get("min.cleanable.dirty.ratio"));
        assertEquals("60000", got.get("segment.ms"));
        assertEquals("compact", got.get("cleanup.policy"));
        got = changelogTopicConfig(TwinTopology.build("in", "out", 10, "i", new TwinTopology.Counters()));
        assertNull(got.get("segment.bytes"));
        assertEquals("compact", got.get("cleanup.policy"));
    }

    /** The configuration Streams gives the store's changelog topic when it creates it. */
    static Map<String, String> changelogTopicConfig(Topology t) throws Exception {
        Field f = Topology.class.getDeclaredField("internalTopologyBuilder");
        f.setAccessible(true);
        InternalTopologyBuilder b = (InternalTopologyBuilder) f.get(t);
        b.setApplicationId("g");
        b.rewriteTopology(new StreamsConfig(props("-group", "g")));
        b.buildTopology(); // connects the stores to their changelogs
        for (InternalTopologyBuilder.TopicsInfo info : b.subtopologyToTopicsInfo().values()) {
            InternalTopicConfig c = info.stateChangelogTopics.get("g-" + TwinTopology.STORE + "-changelog");
            if (c != null) {
                return c.properties(Map.of(), 0);
            }
        }
        throw new AssertionError("no changelog topic in " + b.subtopologyToTopicsInfo());
    }
}
