package agent

import (
	"path"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/identifiers"
)

// FuzzSessionRequest: a session request the agent accepts names a valid container and
// namespace it serves, a known TCP mode and, if any, a clean absolute hook socket path.
func FuzzSessionRequest(f *testing.F) {
	for _, s := range []string{
		`{"namespace":"ftwin","container":"twin"}`,
		`{"namespace":"ftwin","container":"twin","tcp":"established","hook_socket":"/run/ftwin-migrate/hook.sock","probe":"http://127.0.0.1:8080/healthz"}`,
		`{"namespace":"ftwin","container":"../../etc","hook_socket":"/../../x"}`,
		`{"namespace":"k8s.io","container":"a"}`,
		`{"namespace":"ftwin","container":"a","tcp":"sideways"}`,
		`[]`, `{`, `null`,
	} {
		f.Add(s)
	}
	a := &Agent{cfg: Config{Namespaces: []string{"ftwin"}}}
	f.Fuzz(func(t *testing.T, body string) {
		req, status, err := a.decodeSessionRequest(strings.NewReader(body))
		if err != nil {
			if status/100 != 4 {
				t.Fatalf("refusal with status %d: %v", status, err)
			}
			return
		}
		if identifiers.Validate(req.Container) != nil || req.Namespace != "ftwin" {
			t.Fatalf("accepted container %q in namespace %q", req.Container, req.Namespace)
		}
		if req.TCP != "close" && req.TCP != "established" {
			t.Fatalf("accepted TCP mode %q", req.TCP)
		}
		if h := req.HookSocket; h != "" && (!path.IsAbs(h) || path.Clean(h) != h) {
			t.Fatalf("accepted hook socket %q", h)
		}
	})
}
