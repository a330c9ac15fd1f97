package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
)

// HookProtocolHeader carries the application hook protocol's version (see kafkahooks).
const HookProtocolHeader = "Ftwin-Hook-Protocol"

// HookSocketPath is where a host process reaches socket (a path inside the container) of the
// container whose init process is pid: through the process's root, /proc/PID/root.
func HookSocketPath(pid uint32, socket string) string {
	return filepath.Join("/proc", strconv.FormatUint(uint64(pid), 10), "root", socket)
}

// CallHook sends body to /v1/OP of the hook listening on the Unix socket at path (GET for
// status, POST otherwise) and returns the status and body of its answer.
func CallHook(ctx context.Context, path, op string, body []byte) (int, []byte, error) {
	method := http.MethodPost
	if op == "status" {
		method = http.MethodGet
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://hook/v1/"+op, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set(HookProtocolHeader, "1")
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("reach the hook at %s: %w", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, out, err
}
