package dev.ftwinmigrate.hook;

import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/** Committed offsets, the next offset to consume by topic and partition, as the protocol writes them: {"sensors":{"0":12}}. */
public final class Offsets {
    private final TreeMap<String, TreeMap<Integer, Long>> m = new TreeMap<>();

    public Offsets set(String topic, int partition, long offset) {
        m.computeIfAbsent(topic, t -> new TreeMap<>()).put(partition, offset);
        return this;
    }

    public Long get(String topic, int partition) {
        TreeMap<Integer, Long> p = m.get(topic);
        return p == null ? null : p.get(partition);
    }

    public boolean isEmpty() {
        return m.isEmpty();
    }

    /** Every offset of other, replacing these. */
    public Offsets merge(Offsets other) {
        other.m.forEach((t, ps) -> ps.forEach((p, o) -> set(t, p, o)));
        return this;
    }

    /** The offsets of the partitions that of names (those absent here are left out). */
    public Offsets only(Offsets of) {
        Offsets out = new Offsets();
        of.m.forEach((t, ps) -> ps.forEach((p, o) -> {
            Long mine = get(t, p);
            if (mine != null) {
                out.set(t, p, mine);
            }
        }));
        return out;
    }

    public Offsets copy() {
        return new Offsets().merge(this);
    }

    /** The JSON shape: topic → partition (a string) → offset. */
    Map<String, Map<String, Long>> toJson() {
        Map<String, Map<String, Long>> out = new TreeMap<>();
        m.forEach((t, ps) -> {
            Map<String, Long> q = new TreeMap<>((a, b) -> Integer.compare(Integer.parseInt(a), Integer.parseInt(b)));
            ps.forEach((p, o) -> q.put(Integer.toString(p), o));
            out.put(t, q);
        });
        return out;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Offsets other && m.equals(other.m);
    }

    @Override
    public int hashCode() {
        return Objects.hash(m);
    }

    @Override
    public String toString() {
        return Json.encode(toJson());
    }
}
