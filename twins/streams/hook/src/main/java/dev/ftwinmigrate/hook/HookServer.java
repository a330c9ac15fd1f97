package dev.ftwinmigrate.hook;

import java.io.ByteArrayOutputStream;
import java.io.Closeable;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;

/**
 * Serves the hook protocol (kafkahooks/PROTOCOL.md, versions 1 to 3) for a {@link Participant}
 * on a Unix socket: HTTP/1.1, one request per connection, JSON answers, no framework (the JDK's
 * com.sun.net.httpserver cannot listen on a Unix socket). Each connection has a thread of its
 * own; prepare, resume and abort take turns (a second one waits, within its deadline), status
 * answers at once.
 */
public final class HookServer implements Closeable {
    /** The version this library speaks. */
    public static final int VERSION = 3;
    /** The oldest version it answers. */
    public static final int MIN_VERSION = 1;
    /** The request and answer header naming the version. */
    public static final String HEADER_VERSION = "Ftwin-Hook-Protocol";
    /** Protocol 3: the request header with the milliseconds the client waits for the answer. */
    public static final String HEADER_TIMEOUT = "Ftwin-Hook-Timeout-Ms";
    /** The socket's default path inside the container, and the variable that overrides it. */
    public static final String DEFAULT_SOCKET = "/run/ftwin-migrate/hook.sock";
    public static final String SOCKET_ENV = "FTWIN_HOOK_SOCKET";
    /** The server's own deadlines, when the client sends none shorter (protocol 3 names them). */
    public static final long PREPARE_TIMEOUT_MS = 60_000, RESUME_TIMEOUT_MS = 60_000, ABORT_TIMEOUT_MS = 60_000;

    private static final int MAX_HEADER = 64 << 10, MAX_BODY = 1 << 20;

    private final Participant p;
    private final Path path;
    private final ServerSocketChannel server;
    private final ReentrantLock calls = new ReentrantLock(true);
    private final Consumer<String> log;
    private final Thread acceptor;
    private volatile boolean closed;

    private HookServer(Participant p, Path path, Consumer<String> log) throws IOException {
        this.p = p;
        this.path = path;
        this.log = log;
        Files.createDirectories(path.toAbsolutePath().getParent());
        Files.deleteIfExists(path); // a stale socket of an earlier run
        server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(path));
        Files.setPosixFilePermissions(path, PosixFilePermissions.fromString("rw-------"));
        acceptor = new Thread(this::acceptLoop, "ftwin-hook-server");
        acceptor.setDaemon(true);
    }

    /** The socket path: $FTWIN_HOOK_SOCKET, or {@link #DEFAULT_SOCKET}. */
    public static Path socketPath() {
        String env = System.getenv(SOCKET_ENV);
        return Path.of(env != null && !env.isEmpty() ? env : DEFAULT_SOCKET);
    }

    /** Starts serving p on path (its directory created, a stale socket removed, mode 0600). */
    public static HookServer start(Participant p, Path path, Consumer<String> log) throws IOException {
        HookServer s = new HookServer(p, path, log == null ? m -> {} : log);
        s.acceptor.start();
        return s;
    }

    public Path path() {
        return path;
    }

    private void acceptLoop() {
        while (!closed) {
            try {
                SocketChannel c = server.accept();
                Thread t = new Thread(() -> serve(c), "ftwin-hook-call");
                t.setDaemon(true);
                t.start();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closed) {
                    log.accept("ftwin-hook: accept: " + e);
                }
            }
        }
    }

    record Request(String method, String path, Map<String, String> headers) {}

    record Answer(int status, Object body) {}

    private void serve(SocketChannel c) {
        try (c) {
            Request r;
            try {
                r = read(c);
            } catch (IOException | IllegalArgumentException e) {
                write(c, new Answer(400, error("read the request: " + e.getMessage())));
                return;
            }
            if (r == null) {
                return;
            }
            write(c, answer(r, c));
        } catch (IOException e) {
            // the client went away; nothing to answer
        }
    }

    private static Map<String, Object> error(String msg) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("error", msg);
        return m;
    }

    /** Reads the request line and headers, and discards a body of up to 1 MiB. */
    static Request read(SocketChannel c) throws IOException {
        ByteArrayOutputStream head = new ByteArrayOutputStream();
        ByteBuffer one = ByteBuffer.allocate(4096);
        int end = -1;
        byte[] buf = new byte[0];
        while (end < 0) {
            one.clear();
            int n = c.read(one);
            if (n < 0) {
                if (head.size() == 0) {
                    return null;
                }
                throw new IOException("the connection closed inside the request");
            }
            head.write(one.array(), 0, n);
            buf = head.toByteArray();
            end = indexOf(buf, "\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
            if (end < 0 && buf.length > MAX_HEADER) {
                throw new IllegalArgumentException("headers longer than " + MAX_HEADER + " bytes");
            }
        }
        String[] lines = new String(buf, 0, end, StandardCharsets.ISO_8859_1).split("\r\n");
        String[] first = lines[0].split(" ");
        if (first.length != 3 || !first[2].startsWith("HTTP/1.")) {
            throw new IllegalArgumentException("not an HTTP/1.x request line: " + lines[0]);
        }
        Map<String, String> headers = new LinkedHashMap<>();
        for (int i = 1; i < lines.length; i++) {
            int colon = lines[i].indexOf(':');
            if (colon <= 0) {
                throw new IllegalArgumentException("bad header line: " + lines[i]);
            }
            headers.put(lines[i].substring(0, colon).trim().toLowerCase(Locale.ROOT), lines[i].substring(colon + 1).trim());
        }
        long length = 0;
        if (headers.containsKey("content-length")) {
            length = Long.parseLong(headers.get("content-length"));
            if (length < 0 || length > MAX_BODY) {
                throw new IllegalArgumentException("a body of " + length + " bytes (at most " + MAX_BODY + ")");
            }
        }
        long have = buf.length - (end + 4);
        while (have < length) {
            one.clear();
            int n = c.read(one);
            if (n < 0) {
                throw new IOException("the connection closed inside the body");
            }
            have += n;
        }
        return new Request(first[0], first[1], headers);
    }

    private static int indexOf(byte[] b, byte[] pat) {
        outer:
        for (int i = 0; i + pat.length <= b.length; i++) {
            for (int j = 0; j < pat.length; j++) {
                if (b[i + j] != pat[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }

    private static final String[][] CALLS = {
        {"POST", "/v1/prepare", "1"}, {"POST", "/v1/resume", "1"}, {"POST", "/v1/abort", "1"}, {"GET", "/v1/status", "1"},
        {"POST", "/v2/release", "2"}, {"POST", "/v2/shadow", "2"}, {"POST", "/v2/advance", "2"},
    };

    private static String callList() {
        StringBuilder b = new StringBuilder();
        for (String[] c : CALLS) {
            b.append(b.length() == 0 ? "" : ", ").append(c[1]);
        }
        return b.toString();
    }

    Answer answer(Request r, SocketChannel c) {
        String hv = r.headers().get(HEADER_VERSION.toLowerCase(Locale.ROOT));
        if (hv == null || hv.isEmpty()) {
            return new Answer(400, error("missing header " + HEADER_VERSION + " (this server speaks protocol " + MIN_VERSION + " to " + VERSION + ")"));
        }
        int v;
        try {
            v = Integer.parseInt(hv);
        } catch (NumberFormatException e) {
            v = -1;
        }
        if (v < MIN_VERSION || v > VERSION) {
            return new Answer(400, error("protocol mismatch: the client speaks " + HEADER_VERSION + " \"" + hv + "\", this server speaks " + MIN_VERSION + " to " + VERSION));
        }
        String[] call = null;
        boolean pathKnown = false;
        for (String[] k : CALLS) {
            if (k[1].equals(r.path())) {
                pathKnown = true;
                if (k[0].equals(r.method())) {
                    call = k;
                }
            }
        }
        if (!pathKnown) {
            return new Answer(404, error("no such call " + r.path() + " (protocol " + VERSION + " has " + callList() + ")"));
        }
        if (call == null) {
            return new Answer(405, error(r.path() + " takes " + (r.path().equals("/v1/status") ? "GET" : "POST") + ", not " + r.method()));
        }
        if (Integer.parseInt(call[2]) > v) {
            return new Answer(400, error(r.path() + " is a call of protocol " + call[2] + "; the request speaks " + HEADER_VERSION + " " + v));
        }
        if (call[2].equals("2")) {
            return new Answer(501, error(r.path().substring(4) + ": this application cannot be migrated by replay"));
        }
        if (r.path().equals("/v1/status")) {
            return new Answer(200, p.status().toJson(v));
        }
        String op = r.path().substring(4);
        long serverMs = switch (op) {
            case "prepare" -> PREPARE_TIMEOUT_MS;
            case "resume" -> RESUME_TIMEOUT_MS;
            default -> ABORT_TIMEOUT_MS;
        };
        long ms = serverMs;
        String th = r.headers().get(HEADER_TIMEOUT.toLowerCase(Locale.ROOT));
        if (th != null && v >= 3) {
            try {
                ms = Math.min(serverMs, Math.max(0, Long.parseLong(th)));
            } catch (NumberFormatException e) {
                return new Answer(400, error("header " + HEADER_TIMEOUT + " \"" + th + "\": want milliseconds"));
            }
        }
        Call callCtx = new Call(System.nanoTime() + ms * 1_000_000L, v);
        watchClose(c, callCtx);
        long start = System.nanoTime();
        try {
            if (!calls.tryLock(callCtx.remainingMillis(), TimeUnit.MILLISECONDS)) {
                return new Answer(504, error(op + ": out of time waiting for the call before it"));
            }
            try {
                Object body = switch (op) {
                    case "prepare" -> p.prepare(callCtx).toJson(v);
                    case "resume" -> offsetsAnswer(v, p.resume(callCtx));
                    default -> {
                        p.abort(callCtx);
                        yield new LinkedHashMap<String, Object>();
                    }
                };
                log.accept(String.format("ftwin-hook: %s done in %d ms", op, (System.nanoTime() - start) / 1_000_000));
                return new Answer(200, body);
            } finally {
                calls.unlock();
            }
        } catch (HookException e) {
            log.accept(String.format("ftwin-hook: %s failed after %d ms: %s", op, (System.nanoTime() - start) / 1_000_000, e.getMessage()));
            return new Answer(e.status(), error(op + ": " + e.getMessage()));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return new Answer(503, error(op + ": interrupted"));
        } catch (RuntimeException e) {
            log.accept("ftwin-hook: " + op + " failed: " + e);
            return new Answer(500, error(op + ": " + e));
        }
        // The watcher ends when the connection closes after the answer (interrupting it would
        // close the channel before the answer is written).
    }

    private static Map<String, Object> offsetsAnswer(int v, Offsets o) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("protocol", v);
        m.put("offsets", o.toJson());
        return m;
    }

    /** A thread that cancels call when the client closes its end (a read returns end of file). */
    private static void watchClose(SocketChannel c, Call call) {
        Thread t = new Thread(() -> {
            try {
                ByteBuffer b = ByteBuffer.allocate(64);
                while (c.read(b) >= 0) {
                    b.clear();
                }
                call.cancel();
            } catch (IOException e) {
                // closed by us after the answer, or interrupted: nothing to cancel
            }
        }, "ftwin-hook-watch");
        t.setDaemon(true);
        t.start();
    }

    private static final Map<Integer, String> REASONS = Map.of(200, "OK", 400, "Bad Request", 404, "Not Found",
        405, "Method Not Allowed", 409, "Conflict", 500, "Internal Server Error", 501, "Not Implemented",
        503, "Service Unavailable", 504, "Gateway Timeout");

    private void write(SocketChannel c, Answer a) throws IOException {
        byte[] body = (Json.encode(a.body()) + "\n").getBytes(StandardCharsets.UTF_8);
        String head = "HTTP/1.1 " + a.status() + " " + REASONS.getOrDefault(a.status(), "Status") + "\r\n"
            + "Content-Type: application/json\r\n"
            + "Content-Length: " + body.length + "\r\n"
            + "Connection: close\r\n"
            + HEADER_VERSION + ": " + VERSION + "\r\n\r\n";
        ByteBuffer out = ByteBuffer.allocate(head.length() + body.length);
        out.put(head.getBytes(StandardCharsets.US_ASCII)).put(body).flip();
        while (out.hasRemaining()) {
            c.write(out);
        }
    }

    @Override
    public void close() throws IOException {
        closed = true;
        server.close();
        Files.deleteIfExists(path);
    }
}
