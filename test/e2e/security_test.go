package e2e

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	containerspkg "github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

// TestSpecWithHookIsRefused: the spec travels with the checkpoint, so a peer could ask the
// target to run an OCI hook as root on the host. The target's policy refuses it at restore,
// names what it refused, and the source carries on.
func TestSpecWithHookIsRefused(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "hooked"
	withHook := func(_ context.Context, _ oci.Client, _ *containerspkg.Container, s *oci.Spec) error {
		s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/true"}}}
		return nil
	}
	w := lab.Workload{ID: id, Binary: ml.bin, Args: []string{"-mem-mib", "8", "-interval", "50ms"}, SpecOpts: []oci.SpecOpts{withHook}}
	if err := cloud.Run(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	before := waitState(t, cloud.LogPath(id), func(s state.State) bool { return s.Tick >= 3 })
	rep, err := ml.migrate(t, cloud, fog, id)
	rolledBackAt(t, rep, err, migrate.Restore, "OCI hooks (they run on the host as root)")
	assertSourceIntact(t, ml, cloud, id, before)
}

// TestTargetAgentKilledDuringVerify: the fault that used to leave two copies running. The
// agent dies while its restored copy runs uncommitted; the migrator cannot have the copy
// removed, so it leaves the source frozen (never two copies) and says to run recover. The
// restarted agent removes the uncommitted copy; recover then thaws the source: one copy, its
// state intact.
func TestTargetAgentKilledDuringVerify(t *testing.T) {
	ml := newMigrationLab(t, map[string]func(*agent.Config){"fog": func(c *agent.Config) { c.HeartbeatTimeout = 2 * time.Second }})
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "twin"
	ml.run(t, cloud, id)
	before := lastState(t, cloud, id)
	rep, err := ml.migrate(t, cloud, fog, id, func(o *migrate.Options) {
		o.RemoteUndoTimeout = 2 * time.Second
		o.AgentOpts = append(o.AgentOpts, agent.WithTransport(func(next http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) {
				if strings.HasSuffix(r.URL.Path, "/verify") {
					_ = ml.agents["fog"].Kill()
					return nil, errors.New("agent killed")
				}
				return next.RoundTrip(r)
			})
		}))
	})
	if err == nil || rep.Result != migrate.RollbackFailed || !strings.Contains(err.Error(), "ftwin-migrate recover "+id) {
		t.Fatalf("result %q, err %v: want a failed rollback that names recover", rep.Result, err)
	}
	// Never two copies: the source is still frozen while fog's copy may run.
	if ids := containers(t, cloud); len(ids) != 1 {
		t.Fatalf("cloud holds %v", ids)
	}
	a, err := fog.StartAgent(context.Background(), ml.pki, nil)
	if err != nil {
		t.Fatal(err)
	}
	ml.agents["fog"] = a
	if ids := containers(t, fog); len(ids) != 0 {
		t.Errorf("the restarted agent left the uncommitted copy: %v", ids)
	}
	client, err := cloud.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	tlsCfg, err := pki.ClientConfig(ml.pki, cloud.Name, fog.Name)
	if err != nil {
		t.Fatal(err)
	}
	what, err := migrate.Recover(context.Background(), client, migrate.RecoverOptions{Namespace: lab.Namespace, Container: id, TLS: tlsCfg, HookMode: migrate.HookOff})
	if err != nil || !strings.Contains(what, "rolled back") {
		t.Fatalf("recover: %q, %v", what, err)
	}
	assertSourceIntact(t, ml, cloud, id, before)
}

// TestNoBaseImageOnTarget: the base image does not travel with the
// checkpoint; a target that lacks it is found out in the preflight, before anything happens to
// the source.
func TestNoBaseImageOnTarget(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "lonely"
	w := lab.Workload{ID: id, Binary: ml.bin, Image: "ftwin.local/only-on-cloud:1", Args: []string{"-mem-mib", "8", "-interval", "50ms"}}
	if err := cloud.Run(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	before := waitState(t, cloud.LogPath(id), func(s state.State) bool { return s.Tick >= 3 })
	rep, err := ml.migrate(t, cloud, fog, id)
	rolledBackAt(t, rep, err, migrate.Preflight, "lacks the container's base image ftwin.local/only-on-cloud:1")
	for _, p := range rep.Phases {
		if p.Name == migrate.Checkpoint {
			t.Errorf("the source was checkpointed although the target cannot restore it: %+v", rep.Phases)
		}
	}
	assertSourceIntact(t, ml, cloud, id, before)
}
