package dev.ftwinmigrate.hook;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The answer to prepare. generation is -1 and memberId empty when the application cannot see
 * them (protocol 3 makes them optional); offsets are the group's committed offsets as the
 * broker returns them with require_stable.
 */
public record Boundary(String group, String memberId, String instanceId, int generation, boolean transactional,
                       Offsets offsets, long recordsProcessed, List<String> capabilities) {

    Map<String, Object> toJson(int spoken) {
        Map<String, Object> o = new LinkedHashMap<>();
        o.put("protocol", spoken);
        o.put("group", group);
        o.put("member_id", memberId);
        o.put("instance_id", instanceId);
        o.put("generation", spoken >= 3 || generation >= 0 ? generation : 0);
        o.put("transactional", transactional);
        o.put("offsets", offsets.toJson());
        o.put("records_processed", recordsProcessed);
        if (spoken >= 3 && !capabilities.isEmpty()) {
            o.put("capabilities", capabilities);
        }
        return o;
    }
}
