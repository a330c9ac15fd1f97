package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// TestOfflineCheckpointRestore: checkpoint to a directory on one host, inspect it, restore it
// from the directory on the other host; the workload continues from its state.
func TestOfflineCheckpointRestore(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	const id = "twin"
	ml.run(t, cloud, id)
	ctx := lab.Context(context.Background())
	src, err := cloud.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	res, err := checkpoint.Checkpoint(ctx, src, id, checkpoint.WithExit())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	if _, err := transfer.ExportDir(ctx, src, res.Ref, dir, res.Annotations(id)); err != nil {
		t.Fatal(err)
	}
	if err := cloud.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	before := lastState(t, cloud, id)

	root, store, err := transfer.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := checkpoint.Inspect(ctx, store, root)
	if err != nil {
		t.Fatal(err)
	}
	if info.Container != id || info.BaseImage != "ftwin.local/counter:latest" || info.CRIU == nil || info.CRIU.GetPagesWritten() == 0 || len(info.Entries) < 4 {
		t.Errorf("inspect: %+v (criu %v)", info, info.CRIU)
	}

	dst, err := fog.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ref, _, err := transfer.ImportDir(ctx, dst, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Restore(ctx, dst, id, ref, restore.WithLogFile(fog.LogPath(id)), restore.WithCgroupsPath(fog.CgroupsPath(lab.Namespace, id))); err != nil {
		t.Fatal(err)
	}
	continues(t, fog, id, before)
	assertRunsOnlyOn(t, ml, id, fog)

	// A directory that is not a checkpoint gives an error naming it.
	if _, _, err := transfer.ReadDir(t.TempDir()); err == nil {
		t.Error("ReadDir of an empty directory succeeded")
	}
}
