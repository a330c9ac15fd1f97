package migrate

import (
	"context"
	"crypto/tls"
	"net/http"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// Target is the host a container goes to: the migration session with its agent. Its
// implementation over the agent's mTLS API is NewAgentTarget; tests give the pipeline fakes.
type Target interface {
	// Hello returns the agent's description of its host.
	Hello(ctx context.Context) (agent.Hello, error)
	// CheckCPU asks whether the target's CPU can run a CRIU image dumped here (cpuinfo.img).
	CheckCPU(ctx context.Context, cpuinfo []byte) error
	// Open opens the session; every call below belongs to it. Its undo is Abort.
	Open(ctx context.Context, req agent.SessionRequest) (agent.Session, error)
	// Receiver is where the checkpoint's blobs and CRIU image stream to.
	Receiver() Receiver
	// Restore restores the container from the checkpoint index (and the CRIU image whose digest
	// is imageDigest, if set).
	Restore(ctx context.Context, index ocispec.Descriptor, imageDigest string) (agent.RestoreResult, error)
	// HookTransport reaches the restored container's application hook.
	HookTransport() http.RoundTripper
	// Verify asks whether the restored container runs and passes its probe.
	Verify(ctx context.Context) (agent.VerifyResult, error)
	// Commit makes the migration final on the target.
	Commit(ctx context.Context) error
	// Abort removes everything of the session on the target, the restored container included.
	Abort(ctx context.Context) error
}

// Receiver takes the checkpoint's blobs and its CRIU image directory.
type Receiver interface {
	transfer.Remote
	transfer.DirRemote
}

// NewAgentTarget returns the Target of the agent at addr (host:port), spoken to over mutual TLS.
func NewAgentTarget(addr string, tlsConfig *tls.Config, opts ...agent.ClientOpt) Target {
	return &agentTarget{c: agent.NewClient(addr, tlsConfig, opts...)}
}

type agentTarget struct {
	c *agent.Client
	s *agent.SessionClient
}

func (t *agentTarget) Hello(ctx context.Context) (agent.Hello, error) { return t.c.Hello(ctx) }

func (t *agentTarget) CheckCPU(ctx context.Context, cpuinfo []byte) error {
	return t.c.CheckCPU(ctx, cpuinfo)
}

func (t *agentTarget) Open(ctx context.Context, req agent.SessionRequest) (agent.Session, error) {
	s, err := t.c.Open(ctx, req)
	if err != nil {
		return agent.Session{}, err
	}
	t.s = s
	return agent.Session{ID: s.ID, Timeout: s.Timeout}, nil
}

func (t *agentTarget) Receiver() Receiver { return t.s }

func (t *agentTarget) Restore(ctx context.Context, index ocispec.Descriptor, imageDigest string) (agent.RestoreResult, error) {
	return t.s.Restore(ctx, index, imageDigest)
}

func (t *agentTarget) HookTransport() http.RoundTripper { return t.s.HookTransport() }

func (t *agentTarget) Verify(ctx context.Context) (agent.VerifyResult, error) {
	return t.s.Verify(ctx)
}

func (t *agentTarget) Commit(ctx context.Context) error { return t.s.Commit(ctx) }

func (t *agentTarget) Abort(ctx context.Context) error { return t.s.Abort(ctx) }
