package dev.ftwinmigrate.twin;

import dev.ftwinmigrate.hook.HookServer;
import dev.ftwinmigrate.hook.StreamsHook;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;

/**
 * The digital twin as a Kafka Streams application: exactly_once_v2, static membership
 * (group.instance.id), the hook protocol on a Unix socket (ftwin-hook), and a JSON status line a
 * second on stdout ({"processed":N,"state":"running",...}, as the Go twin prints). Flags follow
 * the Go twin's: -brokers, -group (the application.id), -instance-id, -in, -out, -window,
 * -commit-interval-ms, -session-timeout-ms, -hook-socket (empty: no hook), -threads, -state-dir.
 * SIGTERM closes it without leaving the group (a static member sends no LeaveGroup) unless
 * -leave-on-close true.
 *
 * <p>The Kafka-native ways to move the twin, a restart from the changelog and a standby
 * replica's takeover, take these flags (their defaults leave the twin as it was):
 * <ul>
 * <li>{@code -standby-replicas N} (default 0): num.standby.replicas, the warm copies Streams keeps
 * of each store on other instances.
 * <li>{@code -role active|standby} (default empty: Streams' default assignor): the client tag
 * {@code ftwin.role} (client.tag.ftwin.role) and {@link PinnedTaskAssignor} as task.assignor.class
 * (KIP-924): every active task on the instances tagged active while one is in the group, the
 * standby tasks on the others; with no active instance left, the tasks go where their state is
 * (a standby instance's warm stores). Both instances of a handover take it.
 * <li>{@code -leave-on-close true|false} (default false): SIGTERM closes with
 * CloseOptions.groupMembershipOperation(LEAVE_GROUP), a LeaveGroup even for a static member, so
 * the group rebalances at once (a standby takes over now, not after session.timeout.ms; the
 * remaining member learns of the rebalance at its next heartbeat, heartbeat.interval.ms, 3 s by
 * default, so a takeover takes 1 to 3 s).
 * <li>{@code -changelog-segment-bytes N} (default 0: the broker's defaults): the store's changelog
 * topic gets segment.bytes=N, segment.ms=60000 and min.cleanable.dirty.ratio=0.01, so compaction
 * keeps a restore near one record per device ({@link TwinTopology#changelogConfig}; a Kafka 4.x
 * broker refuses N below 1 MiB, 1048576).
 * </ul>
 *
 * <p>The status line also reports the instance's tasks and restoration: "active_tasks" and
 * "standby_tasks" (KafkaStreams#metadataForLocalThreads), "standby_lag" (the sum of the standby
 * store partitions' offset lags, KafkaStreams#allLocalStorePartitionLags, read a second apart; -1
 * when there are no standby tasks or their lags are not known yet; with exactly_once_v2 a caught-up
 * standby partition still lags by its last transaction marker, 1), "restored_records" and
 * "restore_ms" (active restoration only, from the StateRestoreListener: records restored, and the
 * time some store partition was restoring, first start to last end) and "standby_records" (the
 * records standby tasks loaded, from the StandbyUpdateListener; see {@link Restoration}).
 */
public final class StreamsTwin {
    private StreamsTwin() {}

    static Map<String, String> flags(String[] args) {
        Map<String, String> f = new LinkedHashMap<>();
        f.put("brokers", "127.0.0.1:9092");
        f.put("group", "ftwin-twin");
        f.put("instance-id", "twin-1");
        f.put("in", "sensors");
        f.put("out", "twin-state");
        f.put("window", "60");
        f.put("commit-interval-ms", "100");
        f.put("session-timeout-ms", "45000");
        f.put("transaction-timeout-ms", "40000");
        f.put("hook-socket", HookServer.socketPath().toString());
        f.put("threads", "1");
        f.put("state-dir", "/tmp/kafka-streams");
        f.put("instance", System.getenv().getOrDefault("FTWIN_HOST", ""));
        f.put("standby-replicas", "0");
        f.put("role", "");
        f.put("leave-on-close", "false");
        f.put("changelog-segment-bytes", "0");
        for (int i = 0; i < args.length; i++) {
            String a = args[i].replaceFirst("^--?", "");
            String v;
            int eq = a.indexOf('=');
            if (eq >= 0) {
                v = a.substring(eq + 1);
                a = a.substring(0, eq);
            } else if (i + 1 < args.length) {
                v = args[++i];
            } else {
                throw new IllegalArgumentException("flag -" + a + " needs a value");
            }
            if (!f.containsKey(a)) {
                throw new IllegalArgumentException("unknown flag -" + a + " (flags: " + f.keySet() + ")");
            }
            f.put(a, v);
        }
        return f;
    }

    static Properties props(Map<String, String> f) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, f.get("group"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, f.get("brokers"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, f.get("commit-interval-ms"));
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, f.get("threads"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, f.get("state-dir"));
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), f.get("instance-id"));
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), f.get("session-timeout-ms"));
        p.put(StreamsConfig.producerPrefix(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG), f.get("transaction-timeout-ms"));
        p.put(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG, Integer.toString(nonNegative(f, "standby-replicas")));
        String role = f.get("role");
        if (!role.isEmpty()) {
            if (!role.equals(PinnedTaskAssignor.ACTIVE) && !role.equals(PinnedTaskAssignor.STANDBY)) {
                throw new IllegalArgumentException("-role " + role + ": want active or standby (or empty)");
            }
            p.put(StreamsConfig.CLIENT_TAG_PREFIX + PinnedTaskAssignor.ROLE_TAG, role);
            p.put(StreamsConfig.TASK_ASSIGNOR_CLASS_CONFIG, PinnedTaskAssignor.class.getName());
        }
        leaveOnClose(f);
        nonNegative(f, "changelog-segment-bytes");
        return p;
    }

    /** The flag's value, an int >= 0. */
    static int nonNegative(Map<String, String> f, String flag) {
        int n;
        try {
            n = Integer.parseInt(f.get(flag));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("-" + flag + " " + f.get(flag) + ": not an integer");
        }
        if (n < 0) {
            throw new IllegalArgumentException("-" + flag + " " + n + ": negative");
        }
        return n;
    }

    /** -leave-on-close: true or false. */
    static boolean leaveOnClose(Map<String, String> f) {
        String v = f.get("leave-on-close");
        if (!v.equals("true") && !v.equals("false")) {
            throw new IllegalArgumentException("-leave-on-close " + v + ": want true or false");
        }
        return v.equals("true");
    }

    /** The store's changelog topic configuration (-changelog-segment-bytes). */
    static Map<String, String> changelog(Map<String, String> f) {
        return TwinTopology.changelogConfig(nonNegative(f, "changelog-segment-bytes"));
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> f;
        Properties props;
        try {
            f = flags(args);
            props = props(f);
        } catch (IllegalArgumentException e) {
            System.err.println("streams-twin: " + e.getMessage());
            System.exit(2);
            return;
        }
        String instance = f.get("instance").isEmpty() ? f.get("instance-id") : f.get("instance");
        boolean leave = leaveOnClose(f);
        Map<String, String> changelog = changelog(f);
        if (!changelog.isEmpty() && nonNegative(f, "changelog-segment-bytes") < (1 << 20)) {
            log("streams-twin: -changelog-segment-bytes below 1 MiB: a Kafka 4.x broker refuses it (segment.bytes is at least 1048576)");
        }
        TwinTopology.Counters counters = new TwinTopology.Counters();
        StreamsHook hook = StreamsHook.forStreams(props).recordsProcessed(counters.processed::get)
            .log(StreamsTwin::log).build();
        KafkaStreams streams = new KafkaStreams(
            TwinTopology.build(f.get("in"), f.get("out"), Integer.parseInt(f.get("window")), instance, counters, changelog),
            props, hook.clientSupplier());
        Restoration restoration = new Restoration();
        streams.setGlobalStateRestoreListener(restoration);
        streams.setStandbyUpdateListener(restoration);
        Tasks tasks = new Tasks(streams, restoration);
        CountDownLatch done = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            log("streams-twin: " + before + " -> " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        if (!f.get("hook-socket").isEmpty()) {
            Path sock = Path.of(f.get("hook-socket"));
            hook.serve(sock, StreamsTwin::log);
            log("streams-twin: hook protocol " + HookServer.VERSION + " on " + sock);
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                hook.close();
            } catch (Exception e) {
                // going anyway
            }
            if (leave) {
                log("streams-twin: closing, leaving the group");
                streams.close(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                    .withTimeout(Duration.ofSeconds(10)));
            } else {
                streams.close(Duration.ofSeconds(10));
            }
            status(hook, counters, tasks);
        }));
        Files.createDirectories(Path.of(f.get("state-dir")));
        streams.start();
        Thread st = new Thread(() -> {
            while (true) {
                try {
                    Thread.sleep(1000);
                } catch (InterruptedException e) {
                    return;
                }
                status(hook, counters, tasks);
            }
        }, "status");
        st.setDaemon(true);
        st.start();
        Thread lag = new Thread(tasks::pollStandbyLag, "standby-lag");
        lag.setDaemon(true);
        lag.start();
        done.await();
        log("streams-twin: stopped");
        System.exit(1);
    }

    private static void status(StreamsHook hook, TwinTopology.Counters c, Tasks tasks) {
        Runtime rt = Runtime.getRuntime();
        int[] n = tasks.counts();
        String line = "{\"processed\":" + c.processed.get() + ",\"skipped\":" + c.skipped.get() + ",\"anomalies\":" + c.anomalies.get()
            + ",\"state\":\"" + hook.status().state() + "\",\"heap_used_mib\":" + ((rt.totalMemory() - rt.freeMemory()) >> 20)
            + ",\"rss_kib\":" + rssKiB() + ",\"threads\":" + Thread.activeCount()
            + ",\"active_tasks\":" + n[0] + ",\"standby_tasks\":" + n[1] + ",\"standby_lag\":" + tasks.standbyLag()
            + ",\"restored_records\":" + tasks.restoration.restoredRecords() + ",\"restore_ms\":" + tasks.restoration.restoreMs()
            + ",\"standby_records\":" + tasks.restoration.standbyRecords() + "}";
        System.out.println(line);
        System.out.flush();
    }

    /** The process's resident set (VmRSS of /proc/self/status), in KiB; -1 when unknown. */
    static long rssKiB() {
        try {
            for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (l.startsWith("VmRSS:")) {
                    return Long.parseLong(l.replaceAll("[^0-9]", ""));
                }
            }
        } catch (Exception e) {
            // not Linux
        }
        return -1;
    }

    static void log(String msg) {
        System.err.println(Instant.now() + " " + msg);
    }
}
