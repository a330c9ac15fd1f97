package dev.ftwinmigrate.hook;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class HookServerTest {
    @TempDir
    Path dir;
    HookServer server;
    Fake fake;

    /** A participant that records its calls; prepare blocks while {@code block} is open. */
    static final class Fake implements Participant {
        final AtomicInteger prepares = new AtomicInteger(), concurrent = new AtomicInteger(), maxConcurrent = new AtomicInteger();
        volatile CountDownLatch block = new CountDownLatch(0);
        volatile boolean sawCancel;

        @Override
        public Boundary prepare(Call call) throws HookException {
            int now = concurrent.incrementAndGet();
            maxConcurrent.accumulateAndGet(now, Math::max);
            try {
                while (!block.await(10, TimeUnit.MILLISECONDS)) {
                    if (call.cancelled()) {
                        sawCancel = true;
                    }
                    call.check("the test's block");
                }
                prepares.incrementAndGet();
                return new Boundary("g", "m-1", "twin-1", 7, true, new Offsets().set("sensors", 0, 12).set("sensors", 10, 3), 42, List.of("hold"));
            } catch (InterruptedException e) {
                throw new HookException(503, "interrupted");
            } finally {
                concurrent.decrementAndGet();
            }
        }

        @Override
        public Offsets resume(Call call) throws HookException {
            throw HookException.conflict("not prepared");
        }

        @Override
        public void abort(Call call) {}

        @Override
        public Status status() {
            return new Status("running", new Offsets().set("sensors", 1, 5), List.of("hold"), Duration.ofMillis(100));
        }
    }

    @BeforeEach
    void start() throws IOException {
        fake = new Fake();
        server = HookServer.start(fake, dir.resolve("run/hook.sock"), m -> {});
    }

    @AfterEach
    void stop() throws IOException {
        server.close();
    }

    record Resp(int status, String head, String body) {}

    Resp call(String method, String path, String... headers) throws IOException {
        try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.connect(UnixDomainSocketAddress.of(server.path()));
            StringBuilder req = new StringBuilder(method + " " + path + " HTTP/1.1\r\nHost: ftwin-hook\r\n");
            for (String h : headers) {
                req.append(h).append("\r\n");
            }
            req.append("\r\n");
            c.write(ByteBuffer.wrap(req.toString().getBytes(StandardCharsets.US_ASCII)));
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteBuffer b = ByteBuffer.allocate(4096);
            while (c.read(b) >= 0) { // the server closes after its answer
                out.write(b.array(), 0, b.position());
                b.clear();
            }
            String all = out.toString(StandardCharsets.UTF_8);
            int split = all.indexOf("\r\n\r\n");
            return new Resp(Integer.parseInt(all.substring(9, 12)), all.substring(0, split), all.substring(split + 4));
        }
    }

    @Test
    void socketIsTheOwnersOnly() throws IOException {
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(server.path())));
    }

    @Test
    void versionHeaderIsRequiredAndChecked() throws IOException {
        Resp r = call("GET", "/v1/status");
        assertEquals(400, r.status());
        assertTrue(r.body().contains("missing header Ftwin-Hook-Protocol (this server speaks protocol 1 to 3)"), r.body());
        r = call("GET", "/v1/status", "Ftwin-Hook-Protocol: 4");
        assertEquals(400, r.status());
        assertTrue(r.body().contains("protocol mismatch: the client speaks Ftwin-Hook-Protocol \\\"4\\\", this server speaks 1 to 3"), r.body());
        assertTrue(r.head().contains("Ftwin-Hook-Protocol: 3"), r.head());
        assertTrue(r.head().contains("Connection: close"), r.head());
    }

    @Test
    void statusSpeaksTheRequestsVersion() throws IOException {
        Resp v1 = call("GET", "/v1/status", "Ftwin-Hook-Protocol: 1");
        assertEquals(200, v1.status());
        assertEquals("{\"protocol\":1,\"state\":\"running\",\"offsets\":{\"sensors\":{\"1\":5}}}\n", v1.body());
        Resp v3 = call("GET", "/v1/status", "Ftwin-Hook-Protocol: 3");
        assertEquals("{\"protocol\":3,\"state\":\"running\",\"offsets\":{\"sensors\":{\"1\":5}},\"capabilities\":[\"hold\"],"
            + "\"offsets_source\":\"local\",\"commit_interval_ns\":100000000}\n", v3.body());
    }

    @Test
    void prepareAnswersTheBoundary() throws IOException {
        Resp r = call("POST", "/v1/prepare", "Ftwin-Hook-Protocol: 3");
        assertEquals(200, r.status(), r.body());
        assertEquals("{\"protocol\":3,\"group\":\"g\",\"member_id\":\"m-1\",\"instance_id\":\"twin-1\",\"generation\":7,\"transactional\":true,"
            + "\"offsets\":{\"sensors\":{\"0\":12,\"10\":3}},\"records_processed\":42,\"capabilities\":[\"hold\"]}\n", r.body());
        r = call("POST", "/v1/prepare", "Ftwin-Hook-Protocol: 1");
        assertFalse(r.body().contains("capabilities"), r.body());
        assertTrue(r.body().startsWith("{\"protocol\":1,"), r.body());
    }

    @Test
    void errorsAndUnknownCalls() throws IOException {
        assertEquals(404, call("GET", "/v1/nothing", "Ftwin-Hook-Protocol: 3").status());
        assertEquals(405, call("GET", "/v1/prepare", "Ftwin-Hook-Protocol: 3").status());
        assertEquals(405, call("POST", "/v1/status", "Ftwin-Hook-Protocol: 3").status());
        Resp r = call("POST", "/v2/release", "Ftwin-Hook-Protocol: 1");
        assertEquals(400, r.status());
        assertTrue(r.body().contains("/v2/release is a call of protocol 2"), r.body());
        assertEquals(501, call("POST", "/v2/shadow", "Ftwin-Hook-Protocol: 3").status());
        r = call("POST", "/v1/resume", "Ftwin-Hook-Protocol: 3");
        assertEquals(409, r.status());
        assertEquals("{\"error\":\"resume: not prepared\"}\n", r.body());
    }

    @Test
    void theClientsTimeoutBoundsTheCall() throws IOException {
        fake.block = new CountDownLatch(1);
        long t0 = System.nanoTime();
        Resp r = call("POST", "/v1/prepare", "Ftwin-Hook-Protocol: 3", "Ftwin-Hook-Timeout-Ms: 200");
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertEquals(504, r.status(), r.body());
        assertTrue(ms >= 190 && ms < 5000, "took " + ms + " ms");
        assertTrue(r.body().contains("out of time while the test's block"), r.body());
    }

    @Test
    void callsTakeTurnsAndStatusDoesNotWait() throws Exception {
        fake.block = new CountDownLatch(1);
        CompletableFuture<Resp> a = CompletableFuture.supplyAsync(() -> unchecked("POST", "/v1/prepare"));
        CompletableFuture<Resp> b = CompletableFuture.supplyAsync(() -> unchecked("POST", "/v1/prepare"));
        Thread.sleep(200);
        Resp st = call("GET", "/v1/status", "Ftwin-Hook-Protocol: 3");
        assertEquals(200, st.status()); // while a prepare runs
        assertEquals(0, fake.prepares.get());
        fake.block.countDown();
        assertEquals(200, a.get(10, TimeUnit.SECONDS).status());
        assertEquals(200, b.get(10, TimeUnit.SECONDS).status());
        assertEquals(2, fake.prepares.get());
        assertEquals(1, fake.maxConcurrent.get(), "two prepares ran at once");
    }

    @Test
    void aClosedConnectionCancelsTheCall() throws Exception {
        fake.block = new CountDownLatch(1);
        try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.connect(UnixDomainSocketAddress.of(server.path()));
            c.write(ByteBuffer.wrap("POST /v1/prepare HTTP/1.1\r\nFtwin-Hook-Protocol: 3\r\n\r\n".getBytes(StandardCharsets.US_ASCII)));
            Thread.sleep(100);
        }
        for (int i = 0; i < 100 && fake.concurrent.get() > 0; i++) {
            Thread.sleep(20);
        }
        assertTrue(fake.sawCancel, "the participant did not see the cancellation");
        assertEquals(0, fake.concurrent.get());
    }

    private Resp unchecked(String m, String p) {
        try {
            return call(m, p, "Ftwin-Hook-Protocol: 3");
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }
}
