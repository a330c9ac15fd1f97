package dev.ftwinmigrate.twin;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * A sensor reading (the input's value, package sensors: {"device","seq","ts_ns","temp","humidity"})
 * with where it was read from: the twin's output names its input partition and offset.
 */
public record Reading(String device, long seq, long tsNs, double temp, double humidity, int partition, long offset) {

    /** Parses the input's JSON value; null when it is not a reading. */
    static Reading parse(String json, int partition, long offset) {
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
        return new Reading(device, seq, ts, temp, hum, partition, offset);
    }

    byte[] toBytes() {
        byte[] d = device.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(4 + d.length + 8 * 5 + 4);
        b.putInt(d.length).put(d).putLong(seq).putLong(tsNs).putDouble(temp).putDouble(humidity).putInt(partition).putLong(offset);
        return b.array();
    }

    static Reading fromBytes(byte[] bytes) {
        if (bytes == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        byte[] d = new byte[b.getInt()];
        b.get(d);
        return new Reading(new String(d, StandardCharsets.UTF_8), b.getLong(), b.getLong(), b.getDouble(), b.getDouble(), b.getInt(), b.getLong());
    }
}
