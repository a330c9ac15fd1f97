package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	containerd "github.com/containerd/containerd/v2/client"

	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// MoveReport says where the time of a Move went.
type MoveReport struct {
	From, To   string
	Checkpoint time.Duration
	// CRIU is CRIU's dump statistics.
	CRIU     *stats.DumpStatsEntry
	Transfer transfer.Stats
	Restore  time.Duration
	// Downtime runs from the start of the dump (the task freezes) to the restored task running.
	Downtime time.Duration
	// Warnings are problems after the commit point that did not undo the move.
	Warnings []string
}

// Move checkpoints container id on host from (the task exits once dumped), copies the
// checkpoint to host to, restores it there (output appended to to.LogPath(id)) and removes
// the source container. If the copy or the restore fails, the source is restarted from the
// same checkpoint, so the workload still runs on exactly one host.
//
// This is the lab's offline move, used by its smoke test; live migration between agents, with
// its phases and rollback, is package migrate's job.
func Move(ctx context.Context, from, to *Host, id string) (rep MoveReport, err error) {
	rep.From, rep.To = from.Name, to.Name
	ctx = Context(ctx)
	src, err := from.Client()
	if err != nil {
		return rep, err
	}
	defer src.Close()
	dst, err := to.Client()
	if err != nil {
		return rep, err
	}
	defer dst.Close()

	// A container with an address of its own takes it along: its connections are restored
	// established. One in its host's network gets the target's address: they are restored
	// closed. Both are dumped established (CRIU then closes nothing on the source's side).
	own, err := containerNet(ctx, src, id)
	if err != nil {
		return rep, fmt.Errorf("lab: move %s from %s: %w", id, from.Name, err)
	}
	start := time.Now()
	if own != nil {
		// The source's link goes down before the dump: the sockets CRIU records must take no
		// more packets here (the kernel would acknowledge them for the copy never to see), and
		// the address must answer nowhere until the copy is restored.
		if err := from.SetContainerLinkUp(ctx, id, false); err != nil {
			return rep, err
		}
	}
	ck, err := checkpoint.Checkpoint(ctx, src, id, checkpoint.WithExit(), checkpoint.WithTCPEstablished())
	if err != nil {
		if own != nil {
			err = errors.Join(err, from.SetContainerLinkUp(context.WithoutCancel(ctx), id, true))
		}
		return rep, fmt.Errorf("lab: move %s from %s: %w", id, from.Name, err)
	}
	rep.Checkpoint, rep.CRIU = ck.Duration, ck.CRIU
	defer func() {
		if err != nil {
			if own != nil {
				_ = to.unplumbContainer(context.WithoutCancel(ctx), id)
			}
			if rerr := restartFrom(ctx, from, id, ck.Ref, own); rerr != nil {
				err = fmt.Errorf("%w; and restarting the source from its checkpoint failed too: %v", err, rerr)
			}
		}
		_ = checkpoint.Delete(ctx, src, ck.Ref)
	}()
	if rep.Transfer, err = transfer.CopyImage(ctx, src, dst, ck.Ref); err != nil {
		return rep, fmt.Errorf("lab: move %s to %s: %w", id, to.Name, err)
	}
	defer func() { _ = checkpoint.Delete(ctx, dst, ck.Ref) }()
	if own != nil {
		if _, err := to.plumbContainer(ctx, id, *own, false); err != nil {
			return rep, fmt.Errorf("lab: move %s to %s: %w", id, to.Name, err)
		}
	}
	res, err := restoreOn(ctx, to, dst, id, ck.Ref, own)
	if err != nil {
		return rep, fmt.Errorf("lab: move %s to %s: %w", id, to.Name, err)
	}
	rep.Restore = res.Duration
	rep.Downtime = time.Since(start)
	// Commit: the source's task has exited; remove the container. A failure here must not
	// roll back (the workload already runs on the target), so it is reported, not returned.
	if rerr := from.Remove(ctx, id); rerr != nil {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the stopped source container remains on %s: %v", from.Name, rerr))
	}
	return rep, nil
}

// restartFrom replaces the exited source container by one restored from its own checkpoint
// (with its own address n, if it has one: its network namespace is recreated).
func restartFrom(ctx context.Context, h *Host, id, ref string, n *ContainerNet) error {
	if err := h.Remove(ctx, id); err != nil {
		return err
	}
	if n != nil {
		if _, err := h.plumbContainer(ctx, id, *n, false); err != nil {
			return err
		}
	}
	client, err := h.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	_, err = restoreOn(ctx, h, client, id, ref, n)
	return err
}

// RestoreHere restores container id on the host from checkpoint ref (already in the host's
// containerd), its output appended to LogPath(id) and its TCP connections closed.
func (h *Host) RestoreHere(ctx context.Context, client *containerd.Client, id, ref string) (*restore.Result, error) {
	return restoreOn(ctx, h, client, id, ref, nil)
}

// restoreOn restores container id on h. With n, the container has an address of its own: it is
// restored into its network namespace on h (made by plumbContainer, its link down), its TCP
// connections established, and its link then brought up, which announces the address.
func restoreOn(ctx context.Context, h *Host, client *containerd.Client, id, ref string, n *ContainerNet) (*restore.Result, error) {
	io, err := h.LogIO(id)
	if err != nil {
		return nil, err
	}
	mode := restore.TCPClose
	opts := []restore.Opt{restore.WithIO(io), restore.WithCgroupsPath(h.CgroupsPath(Namespace, id))}
	if n != nil {
		mode = restore.TCPEstablished
		opts = append(opts, restore.WithNetworkNamespace(filepath.Join("/run/netns", h.ContainerNetNS(id))),
			restore.WithLabels(n.Labels()))
	}
	tcp, err := restore.WithTCP(mode, h.Dir)
	if err != nil {
		return nil, err
	}
	// CRIU's restore log stays where the user can read it when the restore fails (the error
	// names it and quotes its end); a successful restore's goes.
	work := filepath.Join(h.Dir, "criu", fmt.Sprintf("restore-%s-%d", id, time.Now().UnixNano()))
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("lab: create %s: %w", work, err)
	}
	res, err := restore.Restore(ctx, client, id, ref, append(opts, tcp, restore.WithCRIUWorkPath(work))...)
	if err != nil {
		return nil, err
	}
	_ = os.RemoveAll(work)
	if n != nil {
		if err := h.SetContainerLinkUp(ctx, id, true); err != nil {
			return res, err
		}
	}
	return res, nil
}

// containerNet returns container id's own address, or nil when it uses its host's network.
func containerNet(ctx context.Context, client *containerd.Client, id string) (*ContainerNet, error) {
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return nil, err
	}
	n, own, err := ContainerNetFromLabels(labels)
	if err != nil || !own {
		return nil, err
	}
	return &n, nil
}
