package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
)

// roundTripper adapts a function to http.RoundTripper.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// onBlobPut wraps the agent client's transport, handing each blob upload to f first.
func onBlobPut(f func(next http.RoundTripper, r *http.Request) (*http.Response, error)) func(*migrate.Options) {
	return func(o *migrate.Options) {
		o.AgentOpts = append(o.AgentOpts, agent.WithTransport(func(next http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) {
				if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/blobs") {
					return f(next, r)
				}
				return next.RoundTrip(r)
			})
		}))
	}
}

// assertSourceIntact checks that a failed migration changed nothing: the workload still runs on
// the source only, continuing its own state past before.
func assertSourceIntact(t *testing.T, ml *migrationLab, src *lab.Host, id string, before state.State) {
	t.Helper()
	after := waitState(t, src.LogPath(id), func(s state.State) bool { return s.Tick > before.Tick+5 })
	if after.StartNS != before.StartNS || !after.MemOK {
		t.Fatalf("source state after the failed migration %+v does not continue %+v", after, before)
	}
	assertRunsOnlyOn(t, ml, id, src)
}

func rolledBackAt(t *testing.T, rep *migrate.Report, err error, phase migrate.Phase, msg string) {
	t.Helper()
	var pe *migrate.PhaseError
	if !errors.As(err, &pe) || pe.Phase != phase {
		t.Fatalf("migration error %v: want a failure in phase %s", err, phase)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not say %q", err, msg)
	}
	if rep.Result != "rolled back" || rep.Phases[len(rep.Phases)-1].Name != migrate.Rollback || rep.Phases[len(rep.Phases)-1].Error != "" {
		t.Errorf("report: result %q, phases %+v: want a clean rollback last", rep.Result, rep.Phases)
	}
}

// failRestore makes an agent's restores fail for real: runc is asked to join a network
// namespace that does not exist.
func failRestore(c *agent.Config) {
	base := c.RestoreOpts
	c.RestoreOpts = func(r agent.SessionRequest) []restore.Opt {
		return append(base(r), restore.WithSpecEdit(func(s *specs.Spec) error {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/netns/ftwin-does-not-exist"})
			return nil
		}))
	}
}

// TestRollback: each failure ends with the source running and its state intact, and nothing
// of the migration left on the target.
func TestRollback(t *testing.T) {
	ml := newMigrationLab(t, map[string]func(*agent.Config){"fog": failRestore})
	// fog's agent fails restores; a third agent for fog without that fault is started below
	// where a test needs one.
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "twin"
	ml.run(t, cloud, id)

	t.Run("restore fails", func(t *testing.T) {
		before := lastState(t, cloud, id)
		rep, err := ml.migrate(t, cloud, fog, id)
		rolledBackAt(t, rep, err, migrate.Restore, "restore")
		assertSourceIntact(t, ml, cloud, id, before)
	})

	// From here on fog restores normally.
	_ = ml.agents["fog"].Close()
	a, err := fog.StartAgent(context.Background(), ml.pki, nil)
	if err != nil {
		t.Fatal(err)
	}
	ml.agents["fog"] = a

	t.Run("blob corrupted in flight", func(t *testing.T) {
		before := lastState(t, cloud, id)
		var corrupted atomic.Bool
		rep, err := ml.migrate(t, cloud, fog, id, onBlobPut(func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
			if corrupted.Swap(true) {
				return next.RoundTrip(r)
			}
			// Flip one byte of the blob itself (under the compression), as a bad link or disk would.
			dec, err := zstd.NewReader(r.Body)
			if err != nil {
				return nil, err
			}
			raw, err := io.ReadAll(dec)
			dec.Close()
			if err != nil {
				return nil, err
			}
			raw[len(raw)/2] ^= 0xff
			enc, _ := zstd.NewWriter(nil)
			body := enc.EncodeAll(raw, nil)
			r2 := r.Clone(r.Context())
			r2.Body, r2.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			return next.RoundTrip(r2)
		}))
		if !corrupted.Load() {
			t.Fatal("no blob went through the corrupting transport")
		}
		rolledBackAt(t, rep, err, migrate.Transfer, "digest")
		assertSourceIntact(t, ml, cloud, id, before)
	})

	t.Run("health check fails", func(t *testing.T) {
		before := lastState(t, cloud, id)
		rep, err := ml.migrate(t, cloud, fog, id, func(o *migrate.Options) { o.Probe = "http://127.0.0.1:9/healthz" })
		rolledBackAt(t, rep, err, migrate.Verify, "health probe")
		assertSourceIntact(t, ml, cloud, id, before)
	})

	t.Run("target agent killed mid-transfer", func(t *testing.T) {
		before := lastState(t, cloud, id)
		var puts atomic.Int32
		rep, err := ml.migrate(t, cloud, fog, id, onBlobPut(func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
			if puts.Add(1) == 1 {
				// Let part of the first blob through, then kill the agent.
				r2 := r.Clone(r.Context())
				r2.Body = io.NopCloser(io.MultiReader(io.LimitReader(r.Body, 64<<10), killAfter(ml.agents["fog"])))
				r2.ContentLength = -1
				return next.RoundTrip(r2)
			}
			return next.RoundTrip(r)
		}))
		rolledBackAt(t, rep, err, migrate.Transfer, "")
		assertSourceIntact(t, ml, cloud, id, before)
		// A new agent on fog drops what the killed one had received.
		a, err := fog.StartAgent(context.Background(), ml.pki, nil)
		if err != nil {
			t.Fatal(err)
		}
		ml.agents["fog"] = a
		client, err := fog.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		ls, err := client.LeasesService().List(lab.Context(context.Background()))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if _, ok := l.Labels["ftwin-migrate/session"]; ok {
				t.Errorf("session lease %s survived the agent's restart", l.ID)
			}
		}
	})

	t.Run("then a clean migration still works", func(t *testing.T) {
		if _, err := ml.migrate(t, cloud, fog, id); err != nil {
			t.Fatal(err)
		}
		continues(t, fog, id, lastState(t, cloud, id))
		assertRunsOnlyOn(t, ml, id, fog)
	})
}

// killAfter is a reader that kills the agent when first read, then fails.
func killAfter(a *lab.RunningAgent) io.Reader {
	return readerFunc(func([]byte) (int, error) {
		_ = a.Kill()
		return 0, errors.New("agent killed")
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestRefusals: bad input and bad peers give clear errors and change nothing.
func TestRefusals(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "twin"
	ml.run(t, cloud, id)

	t.Run("wrong container name", func(t *testing.T) {
		before := lastState(t, cloud, id)
		rep, err := ml.migrate(t, cloud, fog, id, func(o *migrate.Options) { o.Container = "no-such-twin" })
		rolledBackAt(t, rep, err, migrate.Preflight, `"no-such-twin"`)
		assertSourceIntact(t, ml, cloud, id, before)
	})
	t.Run("unreachable target", func(t *testing.T) {
		before := lastState(t, cloud, id)
		rep, err := ml.migrate(t, cloud, fog, id, func(o *migrate.Options) { o.Target = fog.IP + ":7444" })
		rolledBackAt(t, rep, err, migrate.Preflight, "unreachable")
		assertSourceIntact(t, ml, cloud, id, before)
	})
	t.Run("unauthenticated peer", func(t *testing.T) {
		before := lastState(t, cloud, id)
		anon, err := pki.ClientConfig(ml.pki, cloud.Name, fog.Name)
		if err != nil {
			t.Fatal(err)
		}
		anon.Certificates = nil // no client certificate
		rep, err := ml.migrate(t, cloud, fog, id, func(o *migrate.Options) { o.TLS = anon })
		rolledBackAt(t, rep, err, migrate.Preflight, "certificate")
		assertSourceIntact(t, ml, cloud, id, before)
	})
	t.Run("another protocol version", func(t *testing.T) {
		cfg, err := pki.ClientConfig(ml.pki, cloud.Name, fog.Name)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: cloud.DialContext}}
		req, _ := http.NewRequest(http.MethodGet, "https://"+ml.agents["fog"].Addr+"/v1/hello", nil)
		req.Header.Set(agent.ProtocolHeader, "999")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "protocol version mismatch") || !strings.Contains(string(body), "999") {
			t.Fatalf("agent answered %s %s; want 400 naming the version mismatch", resp.Status, body)
		}
		assertRunsOnlyOn(t, ml, id, cloud)
	})
}
