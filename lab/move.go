package lab

import (
	"context"
	"fmt"
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

	start := time.Now()
	// Established connections are dumped and restored closed: the target has another address.
	ck, err := checkpoint.Checkpoint(ctx, src, id, checkpoint.WithExit(), checkpoint.WithTCPEstablished())
	if err != nil {
		return rep, fmt.Errorf("lab: move %s from %s: %w", id, from.Name, err)
	}
	rep.Checkpoint, rep.CRIU = ck.Duration, ck.CRIU
	defer func() {
		if err != nil {
			if rerr := restartFrom(ctx, from, id, ck.Ref); rerr != nil {
				err = fmt.Errorf("%w; and restarting the source from its checkpoint failed too: %v", err, rerr)
			}
		}
		_ = checkpoint.Delete(ctx, src, ck.Ref)
	}()
	if rep.Transfer, err = transfer.CopyImage(ctx, src, dst, ck.Ref); err != nil {
		return rep, fmt.Errorf("lab: move %s to %s: %w", id, to.Name, err)
	}
	defer func() { _ = checkpoint.Delete(ctx, dst, ck.Ref) }()
	res, err := restoreOn(ctx, to, dst, id, ck.Ref)
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

// restartFrom replaces the exited source container by one restored from its own checkpoint.
func restartFrom(ctx context.Context, h *Host, id, ref string) error {
	if err := h.Remove(ctx, id); err != nil {
		return err
	}
	client, err := h.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	_, err = restoreOn(ctx, h, client, id, ref)
	return err
}

// RestoreHere restores container id on the host from checkpoint ref (already in the host's
// containerd), its output appended to LogPath(id) and its TCP connections closed.
func (h *Host) RestoreHere(ctx context.Context, client *containerd.Client, id, ref string) (*restore.Result, error) {
	return restoreOn(ctx, h, client, id, ref)
}

func restoreOn(ctx context.Context, h *Host, client *containerd.Client, id, ref string) (*restore.Result, error) {
	io, err := h.LogIO(id)
	if err != nil {
		return nil, err
	}
	tcp, err := restore.WithTCP(restore.TCPClose, h.Dir)
	if err != nil {
		return nil, err
	}
	return restore.Restore(ctx, client, id, ref, restore.WithIO(io), restore.WithCgroupsPath(h.CgroupsPath(Namespace, id)), tcp)
}
