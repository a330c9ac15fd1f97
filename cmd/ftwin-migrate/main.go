// Command ftwin-migrate live-migrates stateful Kafka consumers running as containerd
// containers between hosts. It is a thin layer over the project's library packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// exitError carries an exit status without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// newApp is the command line: global flags first, as ctr's (ftwin-migrate --address SOCK
// --namespace NS migrate ...), then the command and its flags.
func newApp() *cli.App {
	app := &cli.App{
		Name:  "ftwin-migrate",
		Usage: "live-migrate stateful stream processors (containerd containers) between cloud and fog hosts",
		Flags: containerdFlags,
		Commands: []*cli.Command{
			doctorCommand(),
			labCommand(),
			imageCommand(),
			netCommand(),
			certsCommand(),
			receiveCommand(),
			migrateCommand(),
			recoverCommand(),
			checkpointCommand(),
			restoreCommand(),
			inspectCommand(),
			demoCommand(),
			benchCommand(),
			drainCommand(),
			controllerCommand(),
		},
	}
	app.Commands = append(app.Commands, cordonCommands()...)
	return app
}

func main() {
	app := newApp()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.RunContext(ctx, os.Args); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "ftwin-migrate:", err)
		os.Exit(1)
	}
}
