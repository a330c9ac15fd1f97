package e2e

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

// TestRecoverAfterMigratorKilled: the migrator process is killed (SIGKILL) while the frozen
// source's checkpoint crosses a slow link. The source stays frozen and labelled; Recover has the
// target undo its part and thaws the source, which continues from its state: one copy runs.
func TestRecoverAfterMigratorKilled(t *testing.T) {
	ml := newMigrationLab(t, nil)
	cloud, fog := ml.Hosts[0], ml.Hosts[1]
	ctx := context.Background()
	const id = "twin"
	ml.run(t, cloud, id)
	if err := fog.SetUplink(ctx, 4); err != nil { // 32 MiB of state takes a minute to cross
		t.Fatal(err)
	}
	cli := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
	before := lastState(t, cloud, id)
	cmd := exec.Command(cli, "migrate", "--address", cloud.Address(), "--namespace", lab.Namespace, "--pki", ml.pki,
		"--host", cloud.Name, "--to", ml.agents[fog.Name].Addr, "--hook", "off", id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	client, err := cloud.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lctx := lab.Context(ctx)
	c, err := client.LoadContainer(lctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(lctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := task.Status(lctx)
		if err == nil && st.Status == containerd.Paused {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the source never froze (status %v, %v)", st.Status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // the checkpoint is on its way
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()

	if st, _ := task.Status(lctx); st.Status != containerd.Paused {
		t.Fatalf("after the migrator died the source is %s; want it frozen", st.Status)
	}
	labels, _ := c.Labels(lctx)
	if labels[migrate.MigratingLabel] != ml.agents[fog.Name].Addr {
		t.Fatalf("source labels %v: want %s=%s", labels, migrate.MigratingLabel, ml.agents[fog.Name].Addr)
	}
	if err := fog.SetUplink(ctx, 0); err != nil {
		t.Fatal(err)
	}

	tlsCfg, err := pki.ClientConfig(ml.pki, cloud.Name, fog.Name)
	if err != nil {
		t.Fatal(err)
	}
	what, err := migrate.Recover(ctx, client, migrate.RecoverOptions{Namespace: lab.Namespace, Container: id, TLS: tlsCfg, HookMode: migrate.HookOff})
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if !strings.Contains(what, "rolled back") {
		t.Errorf("recover did %q; want a rollback", what)
	}
	assertSourceIntact(t, ml, cloud, id, before)
	if labels, _ := c.Labels(lctx); labels[migrate.MigratingLabel] != "" {
		t.Errorf("the migration label survived the recovery: %v", labels)
	}
	if what, err := migrate.Recover(ctx, client, migrate.RecoverOptions{Namespace: lab.Namespace, Container: id, TLS: tlsCfg}); err != nil || !strings.Contains(what, "nothing to recover") {
		t.Errorf("second recover: %q, %v", what, err)
	}
}
