// Package agentserver serves a migration agent (package agent) over mutual TLS: the one way the
// project runs an agent, for `ftwin-migrate receive` and for a lab host's in-process agent.
package agentserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
)

// Server is an agent being served.
type Server struct {
	// Agent is the agent served.
	*agent.Agent
	// Addr is the address served on.
	Addr string

	srv  *http.Server
	done chan error
}

// Start creates the agent of cfg and serves it on ln over mutual TLS with tlsCfg (see
// pki.ServerConfig) until Shutdown, Close or Kill. Start takes ln over: it closes it when it
// fails and when serving stops.
func Start(cfg agent.Config, ln net.Listener, tlsCfg *tls.Config) (*Server, error) {
	if tlsCfg == nil {
		ln.Close()
		return nil, errors.New("agentserver: no TLS configuration (the agent is served over mutual TLS only)")
	}
	a, err := agent.New(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{
		Agent: a,
		Addr:  ln.Addr().String(),
		// Headers within 10 s, and an idle connection closed after 2 minutes. Bodies have no
		// overall read timeout (a CRIU image over a thin link takes long): the agent's handlers
		// set read deadlines that extend while data flows.
		srv:  &http.Server{Handler: a.Handler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10},
		done: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(tls.NewListener(ln, tlsCfg))
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			err = fmt.Errorf("agentserver: serve on %s: %w", s.Addr, err)
		}
		s.done <- err
		close(s.done)
	}()
	return s, nil
}

// Done delivers the error serving stopped with (nil after Shutdown, Close or Kill), then is
// closed.
func (s *Server) Done() <-chan error { return s.done }

// Shutdown stops accepting connections, waits (within ctx) for the calls in flight, then
// aborts the open sessions.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.Agent.Close()
	return err
}

// Close stops serving at once, cutting open connections as a killed agent would, and aborts
// the open sessions.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.Agent.Close()
	return err
}

// Kill stops serving at once, as a killed agent process would: connections are cut and open
// sessions are left as they are.
func (s *Server) Kill() error { return s.srv.Close() }
