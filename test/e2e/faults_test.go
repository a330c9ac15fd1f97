package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/internal/testbin"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/migrate"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

// onRequest wraps the agent client's transport, handing each request whose path ends with
// suffix to f first.
func onRequest(suffix string, f func(next http.RoundTripper, r *http.Request) (*http.Response, error)) func(*migrate.Options) {
	return func(o *migrate.Options) {
		o.AgentOpts = append(o.AgentOpts, agent.WithTransport(func(next http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) {
				if strings.HasSuffix(r.URL.Path, suffix) {
					return f(next, r)
				}
				return next.RoundTrip(r)
			})
		}))
	}
}

// midBody lets 256 KiB of r's body through, calls fault, then the rest.
func midBody(r *http.Request, fault func()) *http.Request {
	r2 := r.Clone(r.Context())
	var once atomic.Bool
	r2.Body = io.NopCloser(io.MultiReader(io.LimitReader(r.Body, 256<<10), readerFunc(func([]byte) (int, error) {
		if !once.Swap(true) {
			fault()
		}
		return 0, io.EOF
	}), r.Body))
	r2.ContentLength = -1
	return r2
}

// faultCell is one cell of the fault matrix: a fault, the phase it strikes, and how the
// container is settled.
type faultCell struct {
	fault, phase string
	// migrate runs the migration with the fault; it returns the report and error (the
	// migrator-killed cell runs the CLI and returns a nil report).
	migrate func(t *testing.T, fm *faultMatrix) (*migrate.Report, error)
	// after, if set, brings the lab back (agent restarted, link up) once the migration ended:
	// before Recover, or, with forceThaw, after it (the target is declared dead meanwhile).
	after func(t *testing.T, fm *faultMatrix)
	// recover: Recover must settle the container (forceThaw: with the target declared dead).
	recover, forceThaw bool
}

type faultMatrix struct {
	*migrationLab
	cloud, fog *lab.Host
	agentEdit  func(*agent.Config)
}

func (fm *faultMatrix) restartAgent(t *testing.T, edit func(*agent.Config)) {
	t.Helper()
	_ = fm.agents["fog"].Kill()
	a, err := fm.fog.StartAgent(context.Background(), fm.pki, edit)
	if err != nil {
		t.Fatal(err)
	}
	fm.agents["fog"] = a
}

// leftovers lists what a migration may leave and must not: containers other than id, session
// leases, received checkpoint images and agent work files on the target; checkpoint images and
// CRIU work directories of the migrator on the source.
func (fm *faultMatrix) leftovers(t *testing.T, id string, workDirsBefore []string) []string {
	t.Helper()
	var left []string
	ctx := lab.Context(context.Background())
	for _, h := range []*lab.Host{fm.cloud, fm.fog} {
		client, err := h.Client()
		if err != nil {
			t.Fatal(err)
		}
		cs, _ := client.Containers(ctx)
		for _, c := range cs {
			if c.ID() != id {
				left = append(left, h.Name+": container "+c.ID())
			}
		}
		ls, _ := client.LeasesService().List(ctx)
		for _, l := range ls {
			if _, ok := l.Labels["ftwin-migrate/session"]; ok {
				left = append(left, h.Name+": session lease "+l.ID)
			}
		}
		imgs, _ := client.ImageService().List(ctx)
		for _, i := range imgs {
			if strings.HasPrefix(i.Name, "ftwin-migrate.dev/received/") || strings.HasPrefix(i.Name, "ftwin-migrate/checkpoint/") {
				left = append(left, h.Name+": image "+i.Name)
			}
		}
		client.Close()
	}
	for _, pattern := range []string{"sessions/*", "criu-restore-*"} {
		m, _ := filepath.Glob(filepath.Join(fm.fog.Dir, "agent", pattern))
		for _, p := range m {
			left = append(left, "fog: "+p)
		}
	}
	now, _ := filepath.Glob(filepath.Join(os.TempDir(), "ftwin-criu-work-*"))
	for _, p := range now {
		if !contains(workDirsBefore, p) {
			left = append(left, "cloud: "+p)
		}
	}
	return left
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestFaultMatrix strikes a migration of a stateful workload with one fault at a time, at the
// phase where it hurts, on a real lab: the target agent killed (restarted, or its host lost and
// declared dead), the migrator killed, the link cut or slowed to 8 kbit/s, the target's disk
// full, the restore failing, the restored application exiting right after its restore. Every
// cell must end — after Recover where the migration says so — with exactly one copy running,
// its state intact, and nothing of the migration left on either host; the matrix is printed.
// (The broker-restart cells are Kafka's: TestReplayRollbacks and the soak run the twin.)
func TestFaultMatrix(t *testing.T) {
	edit := func(c *agent.Config) { c.HeartbeatTimeout, c.SessionTimeout = 2*time.Second, 5*time.Second }
	ml := newMigrationLab(t, map[string]func(*agent.Config){"fog": edit})
	fm := &faultMatrix{migrationLab: ml, cloud: ml.Hosts[0], fog: ml.Hosts[1], agentEdit: edit}
	const id = "twin"
	ctx := context.Background()
	ml.run(t, fm.cloud, id)
	quick := func(o *migrate.Options) { o.PhaseTimeout, o.RemoteUndoTimeout = 15*time.Second, 2*time.Second }
	cells := []faultCell{
		{fault: "target agent killed, restarted", phase: "transfer",
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/criu-image", func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
					return next.RoundTrip(midBody(r, func() { _ = fm.agents["fog"].Kill() }))
				}))
			},
			after: func(t *testing.T, fm *faultMatrix) { fm.restartAgent(t, fm.agentEdit) }},
		{fault: "target agent killed, restarted", phase: "verify", recover: true,
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/verify", func(http.RoundTripper, *http.Request) (*http.Response, error) {
					_ = fm.agents["fog"].Kill()
					return nil, errors.New("agent killed")
				}))
			},
			after: func(t *testing.T, fm *faultMatrix) { fm.restartAgent(t, fm.agentEdit) }},
		{fault: "target agent killed, restarted", phase: "restore (answer lost)", recover: true,
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/restore", func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
					if resp, err := next.RoundTrip(r); err == nil {
						resp.Body.Close()
					}
					_ = fm.agents["fog"].Kill() // the copy runs; the migrator never hears of it
					return nil, errors.New("agent killed")
				}))
			},
			after: func(t *testing.T, fm *faultMatrix) { fm.restartAgent(t, fm.agentEdit) }},
		{fault: "link cut", phase: "verify", recover: true,
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/verify", func(http.RoundTripper, *http.Request) (*http.Response, error) {
					_ = fm.fog.SetLinkUp(ctx, false)
					return nil, errors.New("link cut")
				}))
			},
			after: func(t *testing.T, fm *faultMatrix) { _ = fm.fog.SetLinkUp(ctx, true) }},
		{fault: "migrator killed", phase: "verify (settle window)", recover: true,
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				cli := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
				cmd := exec.Command(cli, "--address", fm.cloud.Address(), "--namespace", lab.Namespace, "migrate", "--pki", fm.pki,
					"--host", fm.cloud.Name, "--to", fm.agents["fog"].Addr, "--hook", "off", "--settle", "30s", id)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				waitTask(t, fm.fog, id, containerd.Running) // restored: the migrator waits out its settle window
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
				return nil, errors.New("migrator killed")
			}},
		{fault: "target host lost (agent killed, link cut), declared dead, back later", phase: "verify", recover: true, forceThaw: true,
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/verify", func(http.RoundTripper, *http.Request) (*http.Response, error) {
					_ = fm.agents["fog"].Kill()
					_ = fm.fog.SetLinkUp(ctx, false)
					return nil, errors.New("host lost")
				}))
			},
			// The host comes back: its agent starts, finds the uncommitted copy and removes it.
			after: func(t *testing.T, fm *faultMatrix) {
				_ = fm.fog.SetLinkUp(ctx, true)
				fm.restartAgent(t, fm.agentEdit)
			}},
		{fault: "migrator killed", phase: "transfer", recover: true,
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				if err := fm.fog.SetUplink(ctx, 4); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = fm.fog.SetUplink(ctx, 0) }()
				cli := testbin.Build(t, "github.com/ftwin-migrate/ftwin-migrate/cmd/ftwin-migrate")
				cmd := exec.Command(cli, "--address", fm.cloud.Address(), "--namespace", lab.Namespace, "migrate", "--pki", fm.pki,
					"--host", fm.cloud.Name, "--to", fm.agents["fog"].Addr, "--hook", "off", id)
				var out strings.Builder
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { t.Logf("the killed migrator said: %s", out.String()) })
				waitTask(t, fm.cloud, id, containerd.Paused)
				time.Sleep(1500 * time.Millisecond) // the checkpoint is on its way
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
				return nil, errors.New("migrator killed")
			}},
		{fault: "link cut", phase: "transfer",
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/criu-image", func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
					return next.RoundTrip(midBody(r, func() { _ = fm.fog.SetLinkUp(ctx, false) }))
				}))
			},
			after: func(t *testing.T, fm *faultMatrix) { _ = fm.fog.SetLinkUp(ctx, true) }},
		{fault: "link at 8 kbit/s", phase: "transfer",
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/criu-image", func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
					return next.RoundTrip(midBody(r, func() { _ = fm.fog.SetUplinkKbit(ctx, 8) }))
				}))
			},
			after: func(t *testing.T, fm *faultMatrix) { _ = fm.fog.SetUplinkKbit(ctx, 0) }},
		{fault: "target disk full", phase: "transfer",
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				dir := filepath.Join(fm.fog.Dir, "agent")
				_ = fm.agents["fog"].Kill()
				if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=400m", "ftwin-full", dir).CombinedOutput(); err != nil {
					t.Fatalf("mount a tmpfs on %s: %v %s", dir, err, out)
				}
				fm.restartAgent(t, fm.agentEdit)
				filler := filepath.Join(dir, "filler")
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, onRequest("/criu-image", func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
					return next.RoundTrip(midBody(r, func() {
						// Fill the disk: what is left is less than the rest of the image.
						_ = exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=400").Run()
					}))
				}))
			},
			after: func(t *testing.T, fm *faultMatrix) {
				dir := filepath.Join(fm.fog.Dir, "agent")
				_ = os.Remove(filepath.Join(dir, "filler"))
				if left := fm.leftovers(t, id, nil); len(left) > 0 {
					t.Logf("before unmounting: %v", left)
				}
				_ = fm.agents["fog"].Kill()
				if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
					t.Errorf("umount %s: %v %s", dir, err, out)
				}
				fm.restartAgent(t, fm.agentEdit)
			}},
		{fault: "restore fails", phase: "restore",
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				fm.restartAgent(t, func(c *agent.Config) { fm.agentEdit(c); failRestore(c) })
				return fm.migrate(t, fm.cloud, fm.fog, id, quick)
			},
			after: func(t *testing.T, fm *faultMatrix) { fm.restartAgent(t, fm.agentEdit) }},
		{fault: "restored application exits", phase: "verify (settle window)",
			migrate: func(t *testing.T, fm *faultMatrix) (*migrate.Report, error) {
				var verifies atomic.Int32
				return fm.migrate(t, fm.cloud, fm.fog, id, quick, func(o *migrate.Options) { o.Settle = time.Second },
					onRequest("/verify", func(next http.RoundTripper, r *http.Request) (*http.Response, error) {
						if verifies.Add(1) == 2 { // after the first verify passed: the copy exits
							killTask(t, fm.fog, id)
						}
						return next.RoundTrip(r)
					}))
			}},
	}

	type row struct {
		cell                    faultCell
		result, settled, copies string
		settleTime              time.Duration
		leftovers               []string
		ok                      bool
	}
	var rows []row
	for _, c := range cells {
		t.Run(c.fault+" @ "+c.phase, func(t *testing.T) {
			r := row{cell: c}
			defer func() { rows = append(rows, r) }()
			before := lastState(t, fm.cloud, id)
			workDirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "ftwin-criu-work-*"))
			start := time.Now()
			rep, err := c.migrate(t, fm)
			r.result = "migrator killed"
			if rep != nil {
				r.result = rep.Result
			}
			if err == nil {
				t.Fatalf("the migration succeeded despite the fault")
			}
			t.Logf("%s: %v", r.result, err)
			if c.after != nil && !c.forceThaw {
				c.after(t, fm)
			}
			if c.recover {
				client, cerr := fm.cloud.Client()
				if cerr != nil {
					t.Fatal(cerr)
				}
				tlsCfg, terr := pki.ClientConfig(fm.pki, fm.cloud.Name, fm.fog.Name)
				if terr != nil {
					t.Fatal(terr)
				}
				what, rerr := migrate.Recover(ctx, client, migrate.RecoverOptions{Namespace: lab.Namespace, Container: id, TLS: tlsCfg, HookMode: migrate.HookOff, ForceThaw: c.forceThaw,
					AgentOpts: []agent.ClientOpt{agent.WithDialer(fm.cloud.DialContext)}})
				client.Close()
				r.settled = "recover: " + strings.SplitN(what, ":", 2)[0]
				if c.forceThaw {
					r.settled = "recover --force-thaw: " + strings.SplitN(what, ":", 2)[0]
				}
				t.Logf("recover: %s", what)
				if rerr != nil {
					t.Fatalf("recover: %v", rerr)
				}
			} else {
				r.settled = "rollback"
			}
			r.settleTime = time.Since(start)
			if c.after != nil && c.forceThaw {
				c.after(t, fm)
			}
			assertSourceIntact(t, fm.migrationLab, fm.cloud, id, before)
			// The agent drops what a lost session left once it idles past its timeout (5 s here);
			// an upload cut by the link ends at the agent's read stall (30 s) first.
			deadline := time.Now().Add(45 * time.Second)
			for {
				r.leftovers = fm.leftovers(t, id, workDirs)
				if len(r.leftovers) == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(250 * time.Millisecond)
			}
			if len(r.leftovers) > 0 {
				t.Errorf("left behind: %v", r.leftovers)
			}
			assertRunsOnlyOn(t, fm.migrationLab, id, fm.cloud)
			r.copies = fmt.Sprintf("%d (cloud)", len(containers(t, fm.cloud)))
			r.ok = !t.Failed()
		})
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tPHASE\tMIGRATION\tSETTLED BY\tIN\tCOPIES\tLEFTOVERS\tOK")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%d\t%v\n", r.cell.fault, r.cell.phase, r.result, r.settled, r.settleTime.Round(100*time.Millisecond), r.copies, len(r.leftovers), r.ok)
	}
	tw.Flush()
	t.Logf("fault matrix:\n%s", b.String())
}

// waitTask waits until container id's task on h has status want.
func waitTask(t *testing.T, h *lab.Host, id string, want containerd.ProcessStatus) {
	t.Helper()
	client, err := h.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := lab.Context(context.Background())
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := client.LoadContainer(ctx, id); err == nil {
			if task, err := c.Task(ctx, nil); err == nil {
				if st, err := task.Status(ctx); err == nil && st.Status == want {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's task on %s never became %s", id, h.Name, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killTask kills container id's task on h (SIGKILL), as an application that exits.
func killTask(t *testing.T, h *lab.Host, id string) {
	t.Helper()
	client, err := h.Client()
	if err != nil {
		t.Error(err)
		return
	}
	defer client.Close()
	ctx := lab.Context(context.Background())
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		t.Error(err)
		return
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Error(err)
		return
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Error(err)
	}
}
