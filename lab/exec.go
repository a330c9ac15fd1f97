package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// Exec runs args in the running container id on the host, as `ctr task exec` does, and returns
// what it wrote to stdout and stderr once it exits. A non-zero exit status is an error that
// carries the output. The process joins the container's namespaces, its time namespace
// included (with runc 1.2 or later; see doctor's clock check), and sees the container's root
// and environment.
func (h *Host) Exec(ctx context.Context, id string, args ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("lab: exec in %s on host %s: no command given", id, h.Name)
	}
	client, err := h.Client()
	if err != nil {
		return nil, err
	}
	defer client.Close()
	ctx = Context(ctx)
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("lab: host %s: container %s: %w", h.Name, id, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("lab: host %s: container %s has no running task: %w", h.Name, id, err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("lab: host %s: spec of %s: %w", h.Name, id, err)
	}
	proc := *spec.Process
	proc.Args, proc.Terminal = args, false

	// Output goes to a file the shim writes (as the containers' logs do): a FIFO read by this
	// process lost all of a short process's output in 10 of 40 execs here (containerd 2.3.7).
	// The file lives in the host's directory, which the shim, in the daemon's mount namespace,
	// sees at the same path.
	var b [4]byte
	_, _ = rand.Read(b[:])
	execID := "exec-" + hex.EncodeToString(b[:])
	outPath := filepath.Join(h.Dir, "exec", execID+".out")
	if err := os.MkdirAll(filepath.Dir(outPath), 0o700); err != nil {
		return nil, fmt.Errorf("lab: create %s: %w", filepath.Dir(outPath), err)
	}
	defer os.Remove(outPath)
	p, err := task.Exec(ctx, execID, &proc, cio.LogFile(outPath))
	if err != nil {
		return nil, fmt.Errorf("lab: host %s: exec %v in %s: %w", h.Name, args, id, err)
	}
	deleted := false
	defer func() {
		if !deleted {
			_, _ = p.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
		}
	}()
	exited, err := p.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("lab: host %s: exec %v in %s: wait: %w", h.Name, args, id, err)
	}
	if err := p.Start(ctx); err != nil {
		return nil, fmt.Errorf("lab: host %s: exec %v in %s: start: %w", h.Name, args, id, err)
	}
	var st uint32
	select {
	case s := <-exited:
		st = s.ExitCode()
		if err := s.Error(); err != nil {
			return nil, fmt.Errorf("lab: host %s: exec %v in %s: %w", h.Name, args, id, err)
		}
	case <-ctx.Done():
		_ = p.Kill(context.WithoutCancel(ctx), syscall.SIGKILL)
		return nil, fmt.Errorf("lab: host %s: exec %v in %s: %w", h.Name, args, id, ctx.Err())
	}
	p.IO().Wait()
	deleted = true
	if _, err := p.Delete(ctx); err != nil { // the shim has closed the file once this returns
		return nil, fmt.Errorf("lab: host %s: exec %v in %s: delete: %w", h.Name, args, id, err)
	}
	out, err := os.ReadFile(outPath)
	if err != nil {
		return nil, fmt.Errorf("lab: host %s: exec %v in %s: read its output: %w", h.Name, args, id, err)
	}
	if st != 0 {
		return out, fmt.Errorf("lab: host %s: exec %v in %s exited with status %d: %s", h.Name, args, id, st, bytes.TrimSpace(out))
	}
	return out, nil
}
