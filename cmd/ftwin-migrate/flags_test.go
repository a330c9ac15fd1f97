package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/urfave/cli/v2"
)

// probe runs the app with a command added that connects as every containerd command does, and
// returns what it saw.
func probe(t *testing.T, args ...string) (addr, ns string, addrSet bool, err error) {
	t.Helper()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	app.Commands = append(app.Commands, &cli.Command{Name: "probe", Action: func(c *cli.Context) error {
		client, ctx, err := connect(c) // lazy: no daemon needed
		if err != nil {
			return err
		}
		defer client.Close()
		ns, _ = namespaces.Namespace(ctx)
		addr, addrSet = c.String("address"), c.IsSet("address")
		return nil
	}})
	err = app.Run(append([]string{"ftwin-migrate"}, args...))
	return addr, ns, addrSet, err
}

// TestGlobalFlags: --address and --namespace are the app's, before the command, as ctr's; the
// connect helper puts the namespace on the command's context.
func TestGlobalFlags(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	for _, env := range []string{"CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE"} {
		t.Setenv(env, "") // restored after the test
		os.Unsetenv(env)
	}

	addr, ns, set, err := probe(t, "--address", sock, "--namespace", "ftwin", "probe")
	if err != nil || addr != sock || ns != "ftwin" || !set {
		t.Errorf("long flags: %q %q set=%v %v", addr, ns, set, err)
	}
	addr, ns, set, err = probe(t, "-a", sock, "-n", "x", "probe")
	if err != nil || addr != sock || ns != "x" || !set {
		t.Errorf("short flags: %q %q set=%v %v", addr, ns, set, err)
	}
	// doctor checks the system daemon only when --address is not given: IsSet tells.
	addr, ns, set, err = probe(t, "probe")
	if err != nil || addr != defaultAddress || ns != "default" || set {
		t.Errorf("defaults: %q %q set=%v %v", addr, ns, set, err)
	}
	t.Setenv("CONTAINERD_NAMESPACE", "envns")
	if _, ns, _, err = probe(t, "probe"); err != nil || ns != "envns" {
		t.Errorf("$CONTAINERD_NAMESPACE: %q %v", ns, err)
	}

	if _, _, _, err := probe(t, "checkpoint", "--address", sock, "-o", t.TempDir(), "c1"); err == nil || !strings.Contains(err.Error(), "flag provided but not defined: -address") {
		t.Errorf("--address after the command: %v; want it refused (it is a global flag)", err)
	}
}

// TestViaContainerdFlags: --via-containerd migrates with the plugin's own PKI, so --pki and
// --host are refused with it; a socket where no containerd answers is named.
func TestViaContainerdFlags(t *testing.T) {
	run := func(args ...string) error {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		return app.Run(append([]string{"ftwin-migrate"}, args...))
	}
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, extra := range [][]string{{"--pki", "/x"}, {"--host", "cloud"}} {
		err := run(append(append([]string{"--address", sock, "migrate", "--via-containerd", "--to", "10.0.0.2:7443"}, extra...), "twin")...)
		if err == nil || !strings.Contains(err.Error(), "--pki and --host do not apply") {
			t.Errorf("%v: %v", extra, err)
		}
	}
	err := run("--address", sock, "migrate", "--via-containerd", "--to", "10.0.0.2:7443", "twin")
	if err == nil || !strings.Contains(err.Error(), "through containerd's plugin io.containerd.grpc.v1.ftwin-migrate") || !strings.Contains(err.Error(), sock) {
		t.Errorf("no containerd at %s: %v", sock, err)
	}
}
