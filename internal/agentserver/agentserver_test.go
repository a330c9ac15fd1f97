package agentserver_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/ctrd"
	"github.com/ftwin-migrate/ftwin-migrate/internal/agentserver"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testutil"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

// TestServe serves an agent over mutual TLS against a private containerd: a migrator with a
// certificate of the same CA is answered, Shutdown stops serving and Done reports it.
func TestServe(t *testing.T) {
	testutil.RequireRoot(t, "containerd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := ctrd.Start(ctx, ctrd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	client, err := d.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	dir := t.TempDir()
	if err := pki.Init(dir, []pki.Host{{Name: "target", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, {Name: "source"}}); err != nil {
		t.Fatal(err)
	}
	serverTLS, err := pki.ServerConfig(dir, "target")
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := pki.ClientConfig(dir, "source", "target")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentserver.Start(agent.Config{Host: "target", Client: client, WorkDir: t.TempDir()}, ln, nil); err == nil {
		t.Fatal("Start without TLS succeeded")
	}
	if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	s, err := agentserver.Start(agent.Config{Host: "target", Client: client, WorkDir: t.TempDir()}, ln, serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	h, err := agent.NewClient(s.Addr, clientTLS).Hello(ctx)
	if err != nil || h.Host != "target" || h.Protocol != agent.ProtocolVersion {
		t.Fatalf("hello: %+v, %v", h, err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.Done():
		if err != nil {
			t.Errorf("Done after Shutdown: %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("serving did not stop")
	}
	if _, err := agent.NewClient(s.Addr, clientTLS).Hello(ctx); err == nil {
		t.Error("hello after Shutdown succeeded")
	}
}
