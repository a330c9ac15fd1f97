package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/checkpoint"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

func checkpointCommand() *cli.Command {
	return &cli.Command{
		Name:      "checkpoint",
		Usage:     "checkpoint a running container (CRIU through containerd) into a directory, for offline moves",
		ArgsUsage: "CONTAINER",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "directory to write (an OCI image layout); must not exist or be empty"},
			&cli.BoolFlag{Name: "exit", Usage: "stop the task after the dump (default: it keeps running)"},
			&cli.BoolFlag{Name: "tcp-established", Value: true, Usage: "dump established TCP connections (a Kafka client has some); --tcp-established=false refuses them"},
			&cli.DurationFlag{Name: "hook-timeout", Value: 2 * time.Minute, Usage: "give up (and tell the application to carry on) if its hook has not quiesced it within this long"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("checkpoint takes one argument, the container id (got %d)", c.NArg())
			}
			id := c.Args().First()
			client, ctx, err := connect(c)
			if err != nil {
				return err
			}
			defer client.Close()
			var opts []checkpoint.Opt
			if c.Bool("exit") {
				opts = append(opts, checkpoint.WithExit())
			}
			if c.Bool("tcp-established") {
				opts = append(opts, checkpoint.WithTCPEstablished())
			}
			// An application with a hook is quiesced first, and told to carry on after the dump.
			hook, err := containerHook(ctx, client, id)
			if err != nil {
				return err
			}
			var boundary []byte
			if hook != nil {
				pctx, cancel := context.WithTimeout(ctx, c.Duration("hook-timeout"))
				b, err := hook.Prepare(pctx)
				cancel()
				if err != nil {
					// A prepare given up may still complete in the application: undo it.
					if aerr := hook.Abort(context.WithoutCancel(ctx)); aerr != nil {
						err = fmt.Errorf("%w; and telling it to carry on failed too: %v", err, aerr)
					}
					return fmt.Errorf("quiesce %s through its hook (within --hook-timeout %v): %w", id, c.Duration("hook-timeout"), err)
				}
				boundary, _ = json.Marshal(b)
				if !c.Bool("exit") {
					defer func() {
						if err := hook.Abort(context.WithoutCancel(ctx)); err != nil {
							fmt.Fprintf(os.Stderr, "warning: %s did not resume after the checkpoint: %v\n", id, err)
						}
					}()
				}
			}
			res, err := checkpoint.Checkpoint(ctx, client, id, opts...)
			if err != nil {
				return err
			}
			defer checkpoint.Delete(ctx, client, res.Ref)
			ann := res.Annotations(id)
			if boundary != nil {
				ann[checkpoint.AnnotationBoundary] = string(boundary)
			}
			st, err := transfer.ExportDir(ctx, client, res.Ref, c.String("output"), ann)
			if err != nil {
				return err
			}
			fmt.Printf("checkpoint of %s in %s (%d blobs, %.1f MiB; dump took %v)\n", id, c.String("output"), st.BlobsSent, mib(st.BytesSent), res.Duration)
			return nil
		},
	}
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "restore a container from a checkpoint directory written by `checkpoint -o` (its base image must be present)",
		ArgsUsage: "PATH",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "id", Usage: "container id (default: the checkpointed container's)"},
			&cli.StringFlag{Name: "log", Usage: "file for the restored task's stdout and stderr (default: discarded)"},
			&cli.StringFlag{Name: "tcp", Value: string(restore.TCPClose), Usage: "established connections: close (clients reconnect; another host) or established (same address)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("restore takes one argument, the checkpoint directory (got %d)", c.NArg())
			}
			dir := c.Args().First()
			root, _, err := transfer.ReadDir(dir)
			if err != nil {
				return err
			}
			id := c.String("id")
			if id == "" {
				id = root.Annotations[checkpoint.AnnotationContainer]
			}
			if id == "" {
				return fmt.Errorf("%s does not name its container: pass --id", dir)
			}
			client, ctx, err := connect(c)
			if err != nil {
				return err
			}
			defer client.Close()
			ref, _, err := transfer.ImportDir(ctx, client, dir)
			if err != nil {
				return err
			}
			defer checkpoint.Delete(ctx, client, ref)
			mode, err := restore.ParseTCPMode(c.String("tcp"))
			if err != nil {
				return fmt.Errorf("--tcp: %w", err)
			}
			tcp, err := restore.WithTCP(mode, os.TempDir())
			if err != nil {
				return err
			}
			opts := []restore.Opt{tcp}
			if l := c.String("log"); l != "" {
				opts = append(opts, restore.WithLogFile(l))
			}
			res, err := restore.Restore(ctx, client, id, ref, opts...)
			if err != nil {
				return err
			}
			fmt.Printf("%s restored from %s (pid %d, %v)\n", id, dir, res.Task.Pid(), res.Duration)
			return nil
		},
	}
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what a checkpoint directory holds",
		ArgsUsage: "PATH",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("inspect takes one argument, the checkpoint directory (got %d)", c.NArg())
			}
			root, store, err := transfer.ReadDir(c.Args().First())
			if err != nil {
				return err
			}
			info, err := checkpoint.Inspect(c.Context, store, root)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(info)
			}
			return info.WriteText(os.Stdout)
		},
	}
}

// containerHook returns the hook of container id's application, or nil if it serves none at
// the default socket.
func containerHook(ctx context.Context, client *containerd.Client, id string) (*migrate.SocketHook, error) {
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", id, err)
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("container %q has no running task: %w", id, err)
	}
	return migrate.FindSocketHook(t.Pid(), migrate.DefaultHookSocket)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
