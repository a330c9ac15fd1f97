package dev.ftwinmigrate.hook;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The answer to status. offsets are what the application last committed as it knows them
 * (offsetsSource "local"), not read from the broker: status answers at once, also while a
 * prepare runs. commitInterval (protocol 3) is the longest the application may take to commit
 * once it runs: the migrator waits at least that long before it calls a resumed copy stuck.
 */
public record Status(String state, Offsets offsets, List<String> capabilities, Duration commitInterval) {

    Map<String, Object> toJson(int spoken) {
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("protocol", spoken);
        o.put("state", state);
        o.put("offsets", offsets.toJson());
        if (spoken >= 2 && !capabilities.isEmpty()) {
            o.put("capabilities", capabilities);
        }
        if (spoken >= 3) {
            o.put("offsets_source", "local");
            if (commitInterval != null) {
                o.put("commit_interval_ns", commitInterval.toNanos());
            }
        }
        return o;
    }
}
