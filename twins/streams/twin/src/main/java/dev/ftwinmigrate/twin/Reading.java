package dev.ftwinmigrate.twin;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * A sensor reading (the input's value, package sensors: {"device","seq","ts_ns","temp","humidity"})
 * with where it was read from (the twin's output names its input partition and offset) and when
 * the stream thread processed it: Kafka Streams' wall-clock time of the thread's current loop
 * (ProcessorContext#currentSystemTimeMs), one value for the records of one poll, as the Go twin
 * stamps the records of one batch alike, so that the verifier's normal output interval is the
 * batch interval.
 */
public record Reading(String device, long seq, long tsNs, double temp, double humidity, int partition, long offset, long processedNs) {

    /** Parses the input's JSON value; null when it is not a reading. */
    static Reading parse(String json, int partition, long offset, long processedNs) {
        if (json == null) {
            return null;
        }
        String device = MiniJson.string(json, "device");
        Long seq = MiniJson.integer(json, "seq");
        Long ts = MiniJson.integer(json, "ts_ns");
        Double temp = MiniJson.number(json, "temp");
        Double hum = MiniJson.number(json, "humidity");
        if (device == null || device.isEmpty() || seq == null || ts == null || temp == null || hum == null) {
            return null;
        }
        return new Reading(device, seq, ts, temp, hum, partition, offset, processedNs);
    }

    byte[] toBytes() {
        byte[] d = device.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(4 + d.length + 8 * 6 + 4);
        b.putInt(d.length).put(d).putLong(seq).putLong(tsNs).putDouble(temp).putDouble(humidity).putInt(partition).putLong(offset).putLong(processedNs);
        return b.array();
    }

    static Reading fromBytes(byte[] bytes) {
        if (bytes == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        byte[] d = new byte[b.getInt()];
        b.get(d);
        return new Reading(new String(d, StandardCharsets.UTF_8), b.getLong(), b.getLong(), b.getDouble(), b.getDouble(), b.getInt(), b.getLong(), b.getLong());
    }
}
