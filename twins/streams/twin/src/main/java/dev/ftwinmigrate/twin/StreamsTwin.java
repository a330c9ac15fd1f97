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
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;

/**
 * The digital twin as a Kafka Streams application: exactly_once_v2, static membership
 * (group.instance.id), the hook protocol on a Unix socket (ftwin-hook), and a JSON status line a
 * second on stdout ({"processed":N,"state":"running",...}, as the Go twin prints). Flags follow
 * the Go twin's: -brokers, -group (the application.id), -instance-id, -in, -out, -window,
 * -commit-interval-ms, -session-timeout-ms, -hook-socket (empty: no hook), -threads, -state-dir.
 * SIGTERM closes it without leaving the group (a static member sends no LeaveGroup).
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
        return p;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> f;
        try {
            f = flags(args);
        } catch (IllegalArgumentException e) {
            System.err.println("streams-twin: " + e.getMessage());
            System.exit(2);
            return;
        }
        String instance = f.get("instance").isEmpty() ? f.get("instance-id") : f.get("instance");
        Properties props = props(f);
        TwinTopology.Counters counters = new TwinTopology.Counters();
        StreamsHook hook = StreamsHook.forStreams(props).recordsProcessed(counters.processed::get)
            .log(StreamsTwin::log).build();
        KafkaStreams streams = new KafkaStreams(
            TwinTopology.build(f.get("in"), f.get("out"), Integer.parseInt(f.get("window")), instance, counters),
            props, hook.clientSupplier());
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
            streams.close(Duration.ofSeconds(10));
            status(hook, counters);
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
                status(hook, counters);
            }
        }, "status");
        st.setDaemon(true);
        st.start();
        done.await();
        log("streams-twin: stopped");
        System.exit(1);
    }

    private static void status(StreamsHook hook, TwinTopology.Counters c) {
        Runtime rt = Runtime.getRuntime();
        String line = "{\"processed\":" + c.processed.get() + ",\"skipped\":" + c.skipped.get() + ",\"anomalies\":" + c.anomalies.get()
            + ",\"state\":\"" + hook.status().state() + "\",\"heap_used_mib\":" + ((rt.totalMemory() - rt.freeMemory()) >> 20)
            + ",\"rss_kib\":" + rssKiB() + ",\"threads\":" + Thread.activeCount() + "}";
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
