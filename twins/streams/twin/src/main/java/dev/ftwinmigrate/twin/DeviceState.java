package dev.ftwinmigrate.twin;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * One device's twin, the value of the state store: the latest reading, a ring of the last
 * {@code window} temperatures (the rolling statistics), the running sums of every reading (the
 * baseline), and the output of the last reading applied — the statistics over the window
 * before it and whether it is an anomaly (more than 3 standard deviations from the window's
 * mean, once the window holds 8 readings).
 */
public final class DeviceState {
    static final int MIN_ANOMALY_WINDOW = 8;

    String device = "";
    long lastSeq;
    long count;
    long sumTempHundredths;
    double lastTemp, lastHumidity;
    double[] ring;
    int ringN; // readings in the ring (up to its length)
    int ringNext; // the slot the next reading goes to
    // The output of the last reading applied.
    long outSeq, outSensorNs, outOffset, outProcessedNs;
    int outPartition;
    double outMean, outStddev, outBaseline;
    boolean outAnomaly;
    long anomalies;

    DeviceState(int window) {
        ring = new double[window];
    }

    /** Applies r (a reading already applied, by sequence number, leaves the state as it is) and returns this state. */
    DeviceState apply(Reading r) {
        device = r.device();
        double mean = 0, sd = 0;
        if (ringN > 0) {
            double s = 0, sq = 0;
            for (int k = 0; k < ringN; k++) {
                s += ring[k];
                sq += ring[k] * ring[k];
            }
            mean = s / ringN;
            sd = Math.sqrt(Math.max(0, sq / ringN - mean * mean));
        }
        outMean = mean;
        outStddev = sd;
        outBaseline = count == 0 ? 0 : sumTempHundredths / 100.0 / count;
        outAnomaly = ringN >= MIN_ANOMALY_WINDOW && sd > 0 && Math.abs(r.temp() - mean) > 3 * sd;
        outSeq = r.seq();
        outSensorNs = r.tsNs();
        outPartition = r.partition();
        outOffset = r.offset();
        outProcessedNs = r.processedNs();
        if (r.seq() <= lastSeq) {
            return this;
        }
        if (outAnomaly) {
            anomalies++;
        }
        ring[ringNext] = r.temp();
        ringNext = (ringNext + 1) % ring.length;
        ringN = Math.min(ringN + 1, ring.length);
        count++;
        sumTempHundredths += Math.round(r.temp() * 100);
        lastTemp = r.temp();
        lastHumidity = r.humidity();
        lastSeq = r.seq();
        return this;
    }

    /** The output record's value: the fields of verify.Event. */
    String output(String instance) {
        return output(outProcessedNs, instance);
    }

    String output(long processedNs, String instance) {
        StringBuilder b = new StringBuilder(256);
        b.append("{\"device\":");
        str(b, device);
        b.append(",\"seq\":").append(outSeq)
            .append(",\"input_partition\":").append(outPartition)
            .append(",\"input_offset\":").append(outOffset)
            .append(",\"mean\":").append(num(outMean))
            .append(",\"stddev\":").append(num(outStddev))
            .append(",\"baseline\":").append(num(outBaseline))
            .append(",\"anomaly\":").append(outAnomaly)
            .append(",\"temp\":").append(num(lastTemp))
            .append(",\"humidity\":").append(num(lastHumidity))
            .append(",\"sensor_ns\":").append(outSensorNs)
            .append(",\"processed_ns\":").append(processedNs)
            .append(",\"instance\":");
        str(b, instance);
        return b.append('}').toString();
    }

    private static String num(double d) {
        return Double.isFinite(d) ? Double.toString(d) : "0";
    }

    private static void str(StringBuilder b, String s) {
        b.append('"');
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\');
            }
            if (c >= 0x20) {
                b.append(c);
            }
        }
        b.append('"');
    }

    byte[] toBytes() {
        byte[] d = device.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(4 + d.length + 8 * 4 + 8 * 2 + 4 + 4 + 4 + 8 * ring.length + 8 * 4 + 4 + 8 * 3 + 1 + 8);
        b.putInt(d.length).put(d).putLong(lastSeq).putLong(count).putLong(sumTempHundredths).putLong(anomalies)
            .putDouble(lastTemp).putDouble(lastHumidity).putInt(ring.length).putInt(ringN).putInt(ringNext);
        for (double t : ring) {
            b.putDouble(t);
        }
        b.putLong(outSeq).putLong(outSensorNs).putLong(outOffset).putLong(outProcessedNs).putInt(outPartition)
            .putDouble(outMean).putDouble(outStddev).putDouble(outBaseline).put((byte) (outAnomaly ? 1 : 0));
        return Arrays.copyOf(b.array(), b.position());
    }

    static DeviceState fromBytes(byte[] bytes) {
        if (bytes == null) {
            return null;
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        byte[] d = new byte[b.getInt()];
        b.get(d);
        long lastSeq = b.getLong(), count = b.getLong(), sum = b.getLong(), anomalies = b.getLong();
        double lt = b.getDouble(), lh = b.getDouble();
        DeviceState s = new DeviceState(b.getInt());
        s.device = new String(d, StandardCharsets.UTF_8);
        s.lastSeq = lastSeq;
        s.count = count;
        s.sumTempHundredths = sum;
        s.anomalies = anomalies;
        s.lastTemp = lt;
        s.lastHumidity = lh;
        s.ringN = b.getInt();
        s.ringNext = b.getInt();
        for (int i = 0; i < s.ring.length; i++) {
            s.ring[i] = b.getDouble();
        }
        s.outSeq = b.getLong();
        s.outSensorNs = b.getLong();
        s.outOffset = b.getLong();
        s.outProcessedNs = b.getLong();
        s.outPartition = b.getInt();
        s.outMean = b.getDouble();
        s.outStddev = b.getDouble();
        s.outBaseline = b.getDouble();
        s.outAnomaly = b.get() == 1;
        return s;
    }
}
