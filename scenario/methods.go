package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// The ways the twin can move, compared by the benchmark.
const (
	// MethodFtwin is ftwin-migrate: quiesce through the hook, freeze, CRIU, mTLS transfer,
	// restore, verify, resume, commit.
	MethodFtwin = "ftwin-migrate"
	// MethodReplay is ftwin-migrate --mode replay: a snapshot dumped while the twin runs, a
	// shadow restored on the target catching up from the Kafka log, a cutover at a boundary
	// with the state digests compared.
	MethodReplay = "ftwin-migrate-replay"
	// MethodContainerd is the containerd path done carefully: checkpoint (the task exits),
	// export, one tar stream through zstd over the link without the blobs the target holds (the
	// base image's layers), import, restore; no Kafka hooks.
	MethodContainerd = "containerd-zstd"
	// MethodNaive is the plain containerd path: as MethodContainerd, but the whole export as an
	// uncompressed tar (as with scp).
	MethodNaive = "containerd-plain"
	// MethodRestart is the Kafka-native way: stop the twin, start a fresh one on the target that
	// rebuilds all of its state from the changelog and rejoins the group as the same static
	// member (a Kafka Streams user's way).
	MethodRestart = "kafka-restart"
	// MethodStandby is the Kafka Streams standby-replica way: a standby twin on the target
	// (Config.Standby) replicates the changelog all along; the move stops the source, and the
	// standby reads the changelog's tail and takes over as the same static member. The Kafka
	// Streams twin's standby is Streams' own: a second member with a standby task for every
	// partition, which takes the active tasks over in the rebalance the source's leaving starts.
	MethodStandby = "kafka-standby"
	// MethodFloor is CRIU's dump and restore of the same process on one host, through containerd,
	// with no transfer.
	MethodFloor = "criu-floor"
)

func (s *Scenario) record(m Migration, cpu time.Duration) Migration {
	m.End = time.Now()
	m.CPU = cpuTime() - cpu
	if m.Err == nil {
		s.at = m.To
	}
	s.Migrations = append(s.Migrations, m)
	return m
}

// MoveNaive moves the twin to host to the plain containerd way (see MethodNaive): the
// checkpoint is exported to a directory, copied over the lab link as an uncompressed tar stream
// (as an admin would with scp), imported and restored; no hooks, no compression, no rollback.
func (s *Scenario) MoveNaive(ctx context.Context, to string) Migration {
	return s.moveContainerd(ctx, to, false)
}

// MoveContainerd moves the twin to host to the careful containerd way (see MethodContainerd).
func (s *Scenario) MoveContainerd(ctx context.Context, to string) Migration {
	return s.moveContainerd(ctx, to, true)
}

func (s *Scenario) moveContainerd(ctx context.Context, to string, careful bool) Migration {
	method := MethodNaive
	if careful {
		method = MethodContainerd
	}
	m := Migration{Method: method, From: s.at, To: to, Start: time.Now()}
	cpu := cpuTime()
	m.Err = func() error {
		from := s.host(s.at)
		target, err := s.Lab.Host(to)
		if err != nil {
			return err
		}
		ctx := lab.Context(ctx)
		src, err := from.Client()
		if err != nil {
			return err
		}
		defer src.Close()
		dst, err := target.Client()
		if err != nil {
			return err
		}
		defer dst.Close()
		ck, err := checkpoint.Checkpoint(ctx, src, ContainerID, checkpoint.WithExit(), checkpoint.WithTCPEstablished())
		if err != nil {
			return err
		}
		defer checkpoint.Delete(ctx, src, ck.Ref)
		if ck.CRIU != nil {
			m.Frozen = time.Duration(ck.CRIU.GetFrozenTime()) * time.Microsecond
		}
		tmp, err := os.MkdirTemp("", "ftwin-naive-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if _, err := transfer.ExportDir(ctx, src, ck.Ref, filepath.Join(tmp, "out"), ck.Annotations(ContainerID)); err != nil {
			return err
		}
		if careful {
			skip, skipped, err := heldLayers(ctx, dst, filepath.Join(tmp, "out"))
			if err != nil {
				return err
			}
			m.Skipped = skipped
			if m.Bytes, m.WireBytes, err = lab.CopyDirZstd(ctx, from, target, filepath.Join(tmp, "out"), filepath.Join(tmp, "in"), skip); err != nil {
				return err
			}
		} else {
			if m.WireBytes, err = lab.CopyDir(ctx, from, target, filepath.Join(tmp, "out"), filepath.Join(tmp, "in")); err != nil {
				return err
			}
			m.Bytes = m.WireBytes
		}
		ref, _, err := transfer.ImportDir(ctx, dst, filepath.Join(tmp, "in"))
		if err != nil {
			return err
		}
		defer checkpoint.Delete(ctx, dst, ref)
		if _, err := target.RestoreHere(ctx, dst, ContainerID, ref); err != nil {
			return err
		}
		m.Downtime = time.Since(m.Start)
		return from.Remove(ctx, ContainerID)
	}()
	return s.record(m, cpu)
}

// Restart moves the twin to host to the Kafka-native way (see MethodRestart). The twin must run
// with -rebuild-from-changelog for its state to come back.
func (s *Scenario) Restart(ctx context.Context, to string) Migration {
	m := Migration{Method: MethodRestart, From: s.at, To: to, Start: time.Now()}
	cpu := cpuTime()
	target, err := s.Lab.Host(to)
	if err != nil {
		m.Err = err
		return s.record(m, cpu)
	}
	if m.Err = s.stopTwin(ctx, s.host(s.at)); m.Err != nil {
		return s.record(m, cpu)
	}
	m.Err = target.Run(ctx, s.twin)
	m.Downtime = time.Since(m.Start) // to the new process running; the stream gap tells the rest
	return s.record(m, cpu)
}

// MoveStandby moves the twin to the standby's host the standby-replica way (see
// MethodStandby): the source is stopped (it commits its batch and exits), then the standby is
// told to take over (SIGUSR1).
func (s *Scenario) MoveStandby(ctx context.Context) Migration {
	m := Migration{Method: MethodStandby, From: s.at, To: s.standbyAt, Start: time.Now()}
	cpu := cpuTime()
	m.Err = func() error {
		if s.standbyAt == "" {
			return errors.New("scenario: no standby twin (Config.Standby)")
		}
		if err := s.stopTwin(ctx, s.host(s.at)); err != nil {
			return err
		}
		if s.cfg.TwinImageArchive != "" {
			// The Streams standby takes over in the rebalance the source's leaving starts.
			m.Downtime = time.Since(m.Start)
			return nil
		}
		if err := s.signal(ctx, s.host(s.standbyAt), StandbyID, syscall.SIGUSR1); err != nil {
			return fmt.Errorf("scenario: tell the standby to take over: %w", err)
		}
		m.Downtime = time.Since(m.Start) // to the standby told; the stream gap tells the rest
		return nil
	}()
	if m.Err == nil {
		s.standbyAt, s.runningID = "", StandbyID
	}
	return s.record(m, cpu)
}

// WaitStandby waits until the standby twin has replicated at least bytes of changelog and
// is less than maxLag records behind. The Kafka Streams twin's standby must hold a standby
// task for every input partition, and no active one, with its stores' lag known and at most
// maxLag (bytes does not apply: Streams reports records).
func (s *Scenario) WaitStandby(ctx context.Context, bytes, maxLag int64, timeout time.Duration) error {
	if s.standbyAt == "" {
		return errors.New("scenario: no standby twin")
	}
	h := s.host(s.standbyAt)
	deadline := time.Now().Add(timeout)
	for {
		st, _ := LastStatus(h.LogPath(StandbyID))
		if s.cfg.TwinImageArchive != "" {
			if st.StandbyTasks >= int(s.cfg.Partitions) && st.ActiveTasks == 0 && st.Lag >= 0 && st.Lag <= maxLag {
				return nil
			}
		} else if st.ReplicatedBytes >= bytes && st.Lag <= maxLag {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scenario: the standby replicated %d of %d bytes (lag %d, %d standby and %d active tasks) in %v; see %s",
				st.ReplicatedBytes, bytes, st.Lag, st.StandbyTasks, st.ActiveTasks, timeout, h.LogPath(StandbyID))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StandbyHost is the host of the standby twin, "" if there is none (or it took over).
func (s *Scenario) StandbyHost() string { return s.standbyAt }

// signal sends sig to the task of container id on h.
func (s *Scenario) signal(ctx context.Context, h *lab.Host, id string, sig syscall.Signal) error {
	client, err := h.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx = lab.Context(ctx)
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return err
	}
	return t.Kill(ctx, sig)
}

// stopTwin ends the twin on h with SIGTERM (it commits and exits; a static member sends no
// LeaveGroup) and removes its container.
func (s *Scenario) stopTwin(ctx context.Context, h *lab.Host) error {
	client, err := h.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx = lab.Context(ctx)
	c, err := client.LoadContainer(ctx, ContainerID)
	if err != nil {
		return err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return err
	}
	exited, err := t.Wait(ctx)
	if err != nil {
		return err
	}
	if err := t.Kill(ctx, syscall.SIGTERM); err != nil {
		return fmt.Errorf("scenario: stop the twin on %s: %w", h.Name, err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("scenario: the twin on %s did not exit within 30s of SIGTERM", h.Name)
	}
	return h.Remove(ctx, ContainerID)
}

// Floor dumps the twin with CRIU into a directory and restores it from there on the same host
// (see MethodFloor): containerd and runc around CRIU, but no content store and no transfer.
func (s *Scenario) Floor(ctx context.Context) Migration {
	h := s.host(s.at)
	m := Migration{Method: MethodFloor, From: h.Name, To: h.Name, Start: time.Now()}
	cpu := cpuTime()
	work, err := os.MkdirTemp("", "ftwin-floor-")
	if err != nil {
		m.Err = err
		return s.record(m, cpu)
	}
	defer os.RemoveAll(work)
	image := filepath.Join(work, "image")
	m.Err = func() error {
		client, err := h.Client()
		if err != nil {
			return err
		}
		defer client.Close()
		ctx := lab.Context(ctx)
		if err := os.Mkdir(image, 0o700); err != nil {
			return err
		}
		ck, err := checkpoint.Checkpoint(ctx, client, ContainerID, checkpoint.WithExit(), checkpoint.WithTCPEstablished(),
			checkpoint.WithImagePath(image), checkpoint.WithWorkPath(work))
		if err != nil {
			return err
		}
		defer checkpoint.Delete(ctx, client, ck.Ref)
		if ck.CRIU != nil {
			m.Frozen = time.Duration(ck.CRIU.GetFrozenTime()) * time.Microsecond
		}
		if m.Bytes, err = dirSize(image); err != nil {
			return err
		}

		if err := h.Remove(ctx, ContainerID); err != nil {
			return err
		}
		io, err := h.LogIO(ContainerID)
		if err != nil {
			return err
		}
		tcp, err := restore.WithTCP(restore.TCPClose, h.Dir)
		if err != nil {
			return err
		}
		_, err = restore.Restore(ctx, client, ContainerID, ck.Ref, restore.WithIO(io), tcp, restore.WithCRIUImagePath(image),
			restore.WithCgroupsPath(h.CgroupsPath(lab.Namespace, ContainerID)))
		m.Downtime = time.Since(m.Start)
		return err
	}()
	m = s.record(m, cpu)
	if m.Err == nil {
		// After the move's window: what ftwin-migrate's transfer would send of this image
		// (the same zstd level), the compression of this state as measured.
		if m.Compressed, err = transfer.CompressedSize(image); err != nil {
			m.Err = err
		}
		s.Migrations[len(s.Migrations)-1].Compressed, s.Migrations[len(s.Migrations)-1].Err = m.Compressed, m.Err
	}
	return m
}

// heldLayers lists the layer blobs of the checkpoint exported to dir that the target's
// containerd already holds (the base image's), to leave out of the copy; ImportDir skips blobs
// the target holds. Manifests and configs are always sent (kilobytes; the import walks them).
func heldLayers(ctx context.Context, dst *containerd.Client, dir string) (func(string) bool, int64, error) {
	root, store, err := transfer.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	root.Annotations = nil
	held := map[string]bool{}
	var bytes int64
	walk := images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if images.IsLayerType(desc.MediaType) {
			if _, err := dst.ContentStore().Info(ctx, desc.Digest); err == nil {
				held["blobs/"+desc.Digest.Algorithm().String()+"/"+desc.Digest.Encoded()] = true
				bytes += desc.Size
			}
			return nil, nil
		}
		return images.Children(ctx, store, desc)
	})
	if err := images.Walk(ctx, walk, root); err != nil {
		return nil, 0, fmt.Errorf("scenario: walk the checkpoint in %s: %w", dir, err)
	}
	return func(rel string) bool { return held[rel] }, bytes, nil
}

// dirSize adds up the sizes of the files in dir (what a transfer of the image must at least move).
func dirSize(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// KillTwin kills the twin where it runs now with SIGKILL (a crash: no commit, no cleanup).
func (s *Scenario) KillTwin(ctx context.Context) error {
	return s.signal(ctx, s.host(s.at), s.runningID, syscall.SIGKILL)
}
