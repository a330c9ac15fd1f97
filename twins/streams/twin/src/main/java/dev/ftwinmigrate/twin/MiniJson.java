package dev.ftwinmigrate.twin;

/** Reads top-level fields of a flat JSON object (the sensors' readings): enough for this input, no framework. */
final class MiniJson {
    private MiniJson() {}

    private static int valueStart(String json, String key) {
        String k = "\"" + key + "\"";
        int i = json.indexOf(k);
        while (i >= 0) {
            int j = i + k.length();
            while (j < json.length() && Character.isWhitespace(json.charAt(j))) {
                j++;
            }
            if (j < json.length() && json.charAt(j) == ':') {
                j++;
                while (j < json.length() && Character.isWhitespace(json.charAt(j))) {
                    j++;
                }
                return j;
            }
            i = json.indexOf(k, i + 1);
        }
        return -1;
    }

    static String string(String json, String key) {
        int i = valueStart(json, key);
        if (i < 0 || i >= json.length() || json.charAt(i) != '"') {
            return null;
        }
        StringBuilder b = new StringBuilder();
        for (int j = i + 1; j < json.length(); j++) {
            char c = json.charAt(j);
            if (c == '\\' && j + 1 < json.length()) {
                b.append(json.charAt(++j));
            } else if (c == '"') {
                return b.toString();
            } else {
                b.append(c);
            }
        }
        return null;
    }

    private static String token(String json, String key) {
        int i = valueStart(json, key);
        if (i < 0) {
            return null;
        }
        int j = i;
        while (j < json.length() && "+-0123456789.eE".indexOf(json.charAt(j)) >= 0) {
            j++;
        }
        return j > i ? json.substring(i, j) : null;
    }

    static Long integer(String json, String key) {
        String t = token(json, key);
        try {
            return t == null ? null : Long.parseLong(t);
        } catch (NumberFormatException e) {
            return null;
        }
    }

    static Double number(String json, String key) {
        String t = token(json, key);
        try {
            return t == null ? null : Double.parseDouble(t);
        } catch (NumberFormatException e) {
            return null;
        }
    }
}
