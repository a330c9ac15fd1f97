package dev.ftwinmigrate.hook;

/** A call that failed with a protocol status: 409 a state that does not allow it, 500 the application failed, 504 out of time. */
public class HookException extends Exception {
    private final int status;

    public HookException(int status, String message) {
        super(message);
        this.status = status;
    }

    public HookException(int status, String message, Throwable cause) {
        super(message, cause);
        this.status = status;
    }

    /** The HTTP status the server answers. */
    public int status() {
        return status;
    }

    /** 409: the application's state does not allow the call. */
    public static HookException conflict(String message) {
        return new HookException(409, message);
    }

    /** 504: the call ran out of time (its deadline, or the server's). */
    public static HookException timeout(String message) {
        return new HookException(504, message);
    }
}
