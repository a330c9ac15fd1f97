package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/sensors"
	"github.com/ftwin-migrate/ftwin-migrate/test/workloads/twin/twin"
	"github.com/ftwin-migrate/ftwin-migrate/verify"
)

// TestProcess runs the static binary against kfake: status lines, the hook socket, and a
// clean exit on SIGTERM with every consumed input in the output.
func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary against an in-process broker")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "twin")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	res, err := sensors.Run(ctx, sensors.Config{Brokers: brokers, Topic: "sensors", Devices: 5, Rate: 500, Duration: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "hook.sock")
	cmd := exec.Command(bin, "-brokers", brokers[0], "-hook-socket", sock, "-state-mib", "16", "-devices", "5")
	cmd.Env = append(os.Environ(), "FTWIN_HOST=proc-test")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := bufio.NewScanner(stdout)
	var st twin.Stats
	for st.Processed < res.Produced {
		if !lines.Scan() {
			t.Fatalf("stdout ended: %v", lines.Err())
		}
		if err := json.Unmarshal(lines.Bytes(), &st); err != nil {
			t.Fatalf("status line %q: %v", lines.Text(), err)
		}
	}
	if st.StateMiB != 16 || st.Devices != 5 || st.TxnCommits == 0 || st.State != "running" {
		t.Errorf("status %+v", st)
	}

	hook := kafkahooks.Dial(sock)
	b, err := hook.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Group != "ftwin-twin" || b.InstanceID != "twin-1" || !b.Transactional || b.RecordsProcessed != res.Produced {
		t.Errorf("boundary %+v", b)
	}
	if _, err := hook.Resume(ctx); err != nil {
		t.Fatal(err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("hook socket left behind: %v", err)
	}
	rep, err := verify.Output(ctx, brokers, "twin-state", verify.InputTopic("sensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.EventsOut != res.Produced || rep.Instances["proc-test"] != res.Produced {
		t.Fatalf("verify: %+v", rep)
	}
}
