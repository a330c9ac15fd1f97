package migrate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
)

// RecoverOptions describe a recovery after a migrator died mid-migration.
type RecoverOptions struct {
	Namespace string
	Container string
	// TLS is the migrator's mutual-TLS client configuration, as for Migrate.
	TLS       *tls.Config
	AgentOpts []agent.ClientOpt
	// HookMode and HookSocket find the application's hook, as for Migrate (HookRequired counts
	// as HookAuto here: a rollback thaws the source whether or not its hook answers).
	HookMode   HookMode
	HookSocket string
	// ForceThaw thaws the source even when the target agent cannot be asked whether it took the
	// container over. Only for a target known to be gone: otherwise two copies may run.
	ForceThaw bool
}

// Recover settles a container whose migration was cut short by the migrator's death, which
// leaves the source frozen (and its application prepared) with MigratingLabel set. It asks the
// target agent: if the target committed the container, the frozen source is removed; otherwise
// the target undoes what it has and the source is thawed and told to carry on. It returns what
// it did.
func Recover(ctx context.Context, client *containerd.Client, o RecoverOptions) (string, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	ctx = namespaces.WithNamespace(ctx, o.Namespace)
	c, err := client.LoadContainer(ctx, o.Container)
	if err != nil {
		return "", fmt.Errorf("container %q in namespace %s: %w", o.Container, o.Namespace, err)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return "", err
	}
	target := labels[MigratingLabel]
	if target == "" {
		return "nothing to recover: no migration of " + o.Container + " was under way", nil
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("container %q has no task: %w", o.Container, err)
	}

	var st agent.ContainerState
	var ac *agent.Client
	if o.TLS == nil {
		err = errors.New("no TLS configuration")
	} else {
		ac = agent.NewClient(target, o.TLS, o.AgentOpts...)
		defer ac.Close()
		st, err = ac.ContainerState(ctx, o.Namespace, o.Container)
	}
	switch {
	case err != nil && !o.ForceThaw:
		return "", fmt.Errorf("cannot ask the target agent at %s whether it took %s over (%w): try again when it is reachable, or pass ForceThaw if it is gone for good", target, o.Container, err)
	case err == nil && st.Committed:
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
			return "", fmt.Errorf("the target owns %s; removing the frozen source failed: %w", o.Container, err)
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			return "", fmt.Errorf("the target owns %s; removing the source container failed: %w", o.Container, err)
		}
		if err := removeLeftovers(ctx, client, labels); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s was committed on %s: removed the frozen source", o.Container, target), nil
	case err == nil:
		if err := ac.AbortContainer(ctx, o.Namespace, o.Container); err != nil {
			return "", fmt.Errorf("the target at %s did not undo its copy of %s: %w", target, o.Container, err)
		}
	}
	// Rolled back: thaw the source and let its application carry on.
	if ts, err := task.Status(ctx); err == nil && ts.Status == containerd.Paused {
		if err := task.Resume(ctx); err != nil {
			return "", fmt.Errorf("thaw %s: %w", o.Container, err)
		}
	}
	if o.HookMode != HookOff {
		hook, err := FindSocketHook(task.Pid(), o.HookSocket)
		if err != nil {
			return "", fmt.Errorf("%s runs again; its application hook: %w", o.Container, err)
		}
		if hook != nil {
			if err := hook.Abort(ctx); err != nil {
				return "", fmt.Errorf("%s runs again but its application did not resume: %w", o.Container, err)
			}
		}
	}
	if err := removeLeftovers(ctx, client, labels); err != nil {
		return "", err
	}
	if _, err := c.SetLabels(ctx, map[string]string{MigratingLabel: "", WorkDirLabel: "", CheckpointLabel: ""}); err != nil {
		return "", fmt.Errorf("clear the migration labels of %s: %w", o.Container, err)
	}
	if err != nil { // ForceThaw: the target could not be asked
		return fmt.Sprintf("rolled back without the target: %s runs again here; the target at %s was not asked (declared gone: %v); an agent that starts there again removes the uncommitted copy it may hold", o.Container, target, err), nil
	}
	return fmt.Sprintf("rolled back: %s runs again here; the target at %s holds nothing of it", o.Container, target), nil
}

// removeLeftovers removes the CRIU work directory and the checkpoint image a dead migrator
// left, as its labels name them — only paths and names of the migrator's own making.
func removeLeftovers(ctx context.Context, client *containerd.Client, labels map[string]string) error {
	if dir := labels[WorkDirLabel]; dir != "" {
		if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || !strings.HasPrefix(filepath.Base(dir), workDirPrefix) && !strings.HasPrefix(filepath.Base(dir), "criu-work-") {
			return fmt.Errorf("label %s names %q, which is no migrator's work directory: remove it by hand if it is a leftover", WorkDirLabel, dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove the dead migrator's work directory %s: %w", dir, err)
		}
	}
	if ref := labels[CheckpointLabel]; strings.HasPrefix(ref, checkpointPrefix) {
		if err := client.ImageService().Delete(ctx, ref); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove the dead migrator's checkpoint image %s: %w", ref, err)
		}
	}
	return nil
}
