package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
	"github.com/ftwin-migrate/ftwin-migrate/internal/counter/state"
	"github.com/ftwin-migrate/ftwin-migrate/internal/wait"
	"github.com/ftwin-migrate/ftwin-migrate/lab"
	"github.com/ftwin-migrate/ftwin-migrate/pki"
)

var labFlags = []cli.Flag{
	&cli.StringFlag{Name: "name", Value: "ftwin", Usage: "lab name (1-8 of [a-z0-9])"},
	&cli.StringFlag{Name: "base-dir", Value: lab.DefaultBaseDir, Usage: "parent directory of the lab's directory"},
}

func labCommand() *cli.Command {
	return &cli.Command{
		Name:  "lab",
		Usage: "simulated cloud/fog hosts on this machine: one network namespace, mount namespace and containerd each",
		Subcommands: []*cli.Command{
			{
				Name:  "up",
				Usage: "bring up a lab",
				Flags: append([]cli.Flag{
					&cli.StringSliceFlag{Name: "hosts", Value: cli.NewStringSlice("cloud", "fog"), Usage: "host names"},
					&cli.StringFlag{Name: "broker", Value: "kfake", Usage: "Kafka broker on the lab bridge: none, kfake (embedded) or apache (real Kafka 4.x)"},
					&cli.IntFlag{Name: "uplink-mbit", Usage: "throttle every host's link to this rate (0: unthrottled)"},
					&cli.StringFlag{Name: "subnet", Value: "10.231.0.0/24", Usage: "the lab's IPv4 /24"},
					&cli.StringSliceFlag{Name: "allow-bind-mount", Usage: "host path (and below) the agents let a migrated container bind-mount (repeatable; see lab run --mount)"},
					&cli.BoolFlag{Name: "plugin", Usage: "run the hosts on containerd-ftwin (containerd with the ftwin-migrate plugin): each daemon serves migration on its socket and receives on HOST:7443; no agent processes"},
					&cli.BoolFlag{Name: "shared-clock", Usage: "put every host on this machine's clocks (default: a time namespace each, its monotonic clock an hour from the next host's, as real hosts' uptimes differ)"},
				}, labFlags...),
				Action: labUp,
			},
			{
				Name: "run",
				Usage: "run container ID on HOST, as `nerdctl run`: an OCI image (--image-archive, --image) or a static binary " +
					"(--workload; default: the counter workload); every host gets the image, so the container can move",
				ArgsUsage: "HOST ID [-- ARGS...]",
				Description: "ARGS replace the image's Cmd (or follow the binary); --entrypoint replaces the image's entrypoint.\n" +
					"   ftwin-migrate lab run --image-archive kcat.tar -e KAFKA=10.231.0.1:9092 -v /srv/data:/data:ro cloud c1 -- -b 10.231.0.1:9092 -C -t in",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "workload", Usage: "static binary to run as the image's only file (default: counter beside this executable)"},
					&cli.StringFlag{Name: "image-archive", Usage: "image archive to import into every host (OCI layout tar as `ctr images export`/`nerdctl save` write, or `docker save` tar)"},
					&cli.StringFlag{Name: "image", Usage: "image to run: one of the archive's (default: its only one), or, without --image-archive, one already in HOST's containerd (namespace " + lab.Namespace + "), copied to the other hosts"},
					&cli.StringFlag{Name: "entrypoint", Usage: "replace the image's entrypoint with this program (the image's Cmd is dropped; ARGS follow it)"},
					&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "KEY=VALUE added to the environment (repeatable)"},
					&cli.StringSliceFlag{Name: "mount", Aliases: []string{"v"}, Usage: "bind mount HOST-PATH:CONTAINER-PATH[:ro|rw] (repeatable; the agents allow only paths given to `lab up --allow-bind-mount`)"},
					&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "working directory in the container (absolute)"},
					&cli.BoolFlag{Name: "own-address", Usage: "give the container a network namespace of its own with an address on the lab network that moves with it (TCP connections survive a migration); default: the host's network"},
				}, labFlags...),
				Action: labRun,
			},
			{
				Name:      "logs",
				Usage:     "print the output of container ID on HOST (what it wrote since it started there, restored or not), or with the single argument \"broker\" the lab broker's log",
				ArgsUsage: "HOST ID | broker",
				Flags:     append([]cli.Flag{&cli.IntFlag{Name: "tail", Usage: "only the last N lines (0: all)"}}, labFlags...),
				Action:    labLogs,
			},
			labKafkaCommand(),
			{
				Name:      "exec",
				Usage:     "run a command in the running container ID on HOST (its namespaces, clock included) and print its output",
				ArgsUsage: "HOST ID -- COMMAND [ARGS...]",
				Flags:     labFlags,
				Action:    labExec,
			},
			{
				Name:   "down",
				Usage:  "remove a lab, or the leftovers of a crashed one",
				Flags:  labFlags,
				Action: labDown,
			},
			{
				Name:   "status",
				Usage:  "show a lab's hosts and anything of it still present on this machine",
				Flags:  append([]cli.Flag{&cli.BoolFlag{Name: "json"}}, labFlags...),
				Action: labStatus,
			},
			{
				Name:  "smoke",
				Usage: "bring up a lab, move a stateful workload cloud→fog→cloud with CRIU, check it continued, tear down",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "workload", Usage: "static binary of the counter workload (default: counter beside this executable)"},
					&cli.IntFlag{Name: "mem-mib", Value: 64, Usage: "memory the workload keeps and checks"},
					&cli.StringFlag{Name: "subnet", Value: "10.231.0.0/24", Usage: "the lab's IPv4 /24"},
				}, labFlags...),
				Action: labSmoke,
			},
			{
				Name:   "serve-kfake",
				Hidden: true,
				Usage:  "serve an embedded Kafka (kfake) for a lab until killed",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "addr", Required: true},
					&cli.StringFlag{Name: "lab-dir", Required: true, Usage: "names the process for teardown"},
				},
				Action: func(c *cli.Context) error {
					b, err := broker.StartEmbedded(c.String("addr"))
					if err != nil {
						return err
					}
					defer b.Close()
					ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, os.Interrupt)
					defer stop()
					<-ctx.Done()
					return nil
				},
			},
		},
	}
}

func labUp(c *cli.Context) error {
	kind, err := broker.ParseKind(c.String("broker"))
	if err != nil {
		return err
	}
	cfg := lab.Config{
		Name: c.String("name"), BaseDir: c.String("base-dir"), Hosts: c.StringSlice("hosts"),
		Subnet: c.String("subnet"), UplinkMbit: c.Int("uplink-mbit"), Broker: kind, Plugin: c.Bool("plugin"),
		SharedClock: c.Bool("shared-clock"),
	}
	if kind == broker.Embedded {
		cfg.Broker = broker.None // served by a process of its own below, so it outlives this command
	}
	l, err := lab.Up(c.Context, cfg)
	if err != nil {
		return err
	}
	if kind == broker.Embedded {
		if err := startDetachedKfake(c.Context, l); err != nil {
			_ = l.Down(context.WithoutCancel(c.Context))
			return err
		}
	}
	binds := c.StringSlice("allow-bind-mount")
	for _, p := range binds {
		if !filepath.IsAbs(p) {
			_ = l.Down(context.WithoutCancel(c.Context))
			return fmt.Errorf("--allow-bind-mount %q: want an absolute host path", p)
		}
	}
	if l.Plugin && len(binds) > 0 {
		_ = l.Down(context.WithoutCancel(c.Context))
		return fmt.Errorf("--allow-bind-mount sets the policy of the lab's agent processes; with --plugin there are none: leave it out")
	}
	if !l.Plugin {
		if err := startAgents(c.Context, l, binds...); err != nil {
			_ = l.Down(context.WithoutCancel(c.Context))
			return err
		}
	}
	if err := printLab(l); err != nil {
		return err
	}
	a, b := l.Hosts[0], l.Hosts[len(l.Hosts)-1]
	if l.Plugin {
		fmt.Printf("\nthe hosts run %s: each receives on HOST:%d; certificates in %s. To move a container %s→%s:\n", lab.PluginDaemon, lab.AgentPort, l.PKIDir, a.Name, b.Name)
		fmt.Printf("  ftwin-migrate --address %s --namespace %s migrate --via-containerd --to %s:%d ID\n", a.Address(), lab.Namespace, b.IP, lab.AgentPort)
		return nil
	}
	fmt.Printf("\nagents listen on HOST:%d; certificates in %s. To move a container %s→%s:\n", lab.AgentPort, labPKI(l), a.Name, b.Name)
	fmt.Printf("  ftwin-migrate --address %s --namespace %s migrate --to %s:%d --pki %s --host %s ID\n",
		a.Address(), lab.Namespace, b.IP, lab.AgentPort, labPKI(l), a.Name)
	return nil
}

func labPKI(l *lab.Lab) string { return filepath.Join(l.Dir, "pki") }

// startAgents creates the lab's certificates and starts `ftwin-migrate receive` in each
// host's network namespace, its command line naming the lab's directory (for teardown); the
// agents let restored containers bind-mount the host paths binds (and below).
func startAgents(ctx context.Context, l *lab.Lab, binds ...string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var hosts []pki.Host
	for _, h := range l.Hosts {
		hosts = append(hosts, pki.Host{Name: h.Name, IPs: []net.IP{net.ParseIP(h.IP)}})
	}
	if err := pki.Init(labPKI(l), hosts); err != nil {
		return err
	}
	for _, h := range l.Hosts {
		logf, err := os.Create(filepath.Join(h.Dir, "agent.log"))
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(h.IP, fmt.Sprint(lab.AgentPort))
		args := []string{"--address", h.Address(), "receive", "--listen", addr,
			"--pki", labPKI(l), "--host", h.Name, "--work-dir", filepath.Join(h.Dir, "agent"), "--cgroup-parent", h.CgroupParent(),
			"--serve-namespace", lab.Namespace, "--allow-host-namespace", "network", "--lab", l.Dir}
		for _, b := range binds {
			args = append(args, "--allow-bind-mount", b)
		}
		cmd := h.Command(context.Background(), exe, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err = cmd.Start()
		logf.Close()
		if err != nil {
			return fmt.Errorf("start the agent of host %s: %w", h.Name, err)
		}
		_ = cmd.Process.Release()
		if err := waitListening(ctx, addr); err != nil {
			return fmt.Errorf("agent of host %s (see %s): %w", h.Name, logf.Name(), err)
		}
	}
	return nil
}

func waitListening(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var dialErr error
	err := wait.Until(ctx, 50*time.Millisecond, func() (bool, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if dialErr = err; err != nil {
			return false, nil
		}
		return true, c.Close()
	})
	if err != nil && dialErr != nil {
		return fmt.Errorf("nothing listens on %s: %w", addr, dialErr)
	}
	return err
}

// labHost loads the lab of --name/--base-dir and its host named by the first argument.
func labHost(c *cli.Context) (*lab.Lab, *lab.Host, error) {
	l, err := lab.Load(c.String("base-dir"), c.String("name"))
	if err != nil {
		return nil, nil, err
	}
	h, err := l.Host(c.Args().Get(0))
	if err != nil {
		return nil, nil, err
	}
	return l, h, nil
}

// currentLog is the log of container id on h that was written last: LogPath (run there, or
// restored by an in-process lab agent), or the log the host's `receive` agent gives a container
// it restored (its --work-dir's logs/NAMESPACE-ID.log).
func currentLog(h *lab.Host, id string) string {
	best, bestTime := h.LogPath(id), time.Time{}
	for _, p := range []string{h.LogPath(id), filepath.Join(h.Dir, "agent", "logs", lab.Namespace+"-"+id+".log")} {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(bestTime) {
			best, bestTime = p, fi.ModTime()
		}
	}
	return best
}

func labLogs(c *cli.Context) error {
	if c.NArg() == 1 && c.Args().Get(0) == "broker" {
		return labBrokerLog(c)
	}
	if c.NArg() != 2 {
		return fmt.Errorf("lab logs takes HOST and ID (got %d arguments)", c.NArg())
	}
	_, h, err := labHost(c)
	if err != nil {
		return err
	}
	path := currentLog(h, c.Args().Get(1))
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("no output of %s on %s (%w): is it running there? `ftwin-migrate lab status` lists the hosts", c.Args().Get(1), h.Name, err)
	}
	_, err = os.Stdout.Write(tailLines(data, c.Int("tail")))
	return err
}

// tailLines returns the last n lines of data (all of it when n <= 0).
func tailLines(data []byte, n int) []byte {
	if n <= 0 {
		return data
	}
	lines := strings.SplitAfter(string(data), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return []byte(strings.Join(lines[max(0, len(lines)-n):], ""))
}

func labRun(c *cli.Context) error {
	if c.NArg() < 2 {
		return fmt.Errorf("lab run takes HOST and ID, then the workload's arguments (got %d arguments)", c.NArg())
	}
	w, err := workloadFromFlags(c)
	if err != nil {
		return err
	}
	l, h, err := labHost(c)
	if err != nil {
		return err
	}
	// Every host holds the image, as hosts pulling from one registry would: a migration does
	// not carry it. An image named alone must be on HOST; it is copied to the others.
	ref, err := h.ImportImage(c.Context, w)
	if err != nil {
		return err
	}
	for _, other := range l.Hosts {
		if other == h {
			continue
		}
		if w.Binary == "" && w.ImageArchive == "" {
			err = h.CopyImage(c.Context, ref, other)
		} else {
			_, err = other.ImportImage(c.Context, w)
		}
		if err != nil {
			return err
		}
	}
	if err := h.Run(c.Context, w); err != nil {
		return err
	}
	fmt.Printf("%s runs on %s (image %s, namespace %s, cgroup %s); output in %s (`ftwin-migrate lab logs %s %s`)\n",
		w.ID, h.Name, ref, lab.Namespace, h.CgroupsPath(lab.Namespace, w.ID), h.LogPath(w.ID), h.Name, w.ID)
	if w.OwnAddress {
		if a, err := h.Network().Address(c.Context, lab.Namespace, w.ID); err == nil && a != nil {
			fmt.Printf("its own address: %s (MAC %s), which moves with it: its TCP connections survive a migration\n", a.IP, a.MAC)
		}
	}
	return nil
}

// workloadFromFlags reads lab run's flags and arguments into a workload, checking them.
func workloadFromFlags(c *cli.Context) (lab.Workload, error) {
	args := c.Args().Slice()[2:]
	if len(args) > 0 && args[0] == "--" { // flag parsing stopped at HOST, so "--" arrives as an argument
		args = args[1:]
	}
	w := lab.Workload{
		ID: c.Args().Get(1), ImageArchive: c.String("image-archive"), Image: c.String("image"),
		Args: args, Env: c.StringSlice("env"), WorkingDir: c.String("workdir"), OwnAddress: c.Bool("own-address"),
	}
	if e := c.String("entrypoint"); e != "" {
		w.Entrypoint = []string{e}
	}
	for _, kv := range w.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return w, fmt.Errorf("--env %q: want KEY=VALUE", kv)
		}
	}
	for _, m := range c.StringSlice("mount") {
		mount, err := lab.ParseMount(m)
		if err != nil {
			return w, fmt.Errorf("--mount: %w", err)
		}
		w.Mounts = append(w.Mounts, mount)
	}
	if w.WorkingDir != "" && !filepath.IsAbs(w.WorkingDir) {
		return w, fmt.Errorf("--workdir %q: want an absolute path in the container", w.WorkingDir)
	}
	switch {
	case c.IsSet("workload") && (w.ImageArchive != "" || w.Image != ""):
		return w, fmt.Errorf("--workload runs a static binary; --image-archive and --image run an image: give one of them")
	case w.ImageArchive != "":
		if fi, err := os.Stat(w.ImageArchive); err != nil {
			return w, fmt.Errorf("--image-archive: %w", err)
		} else if !fi.Mode().IsRegular() {
			return w, fmt.Errorf("--image-archive %s: not a file (want a tar as `ctr images export`, `nerdctl save` or `docker save` write)", w.ImageArchive)
		}
	case w.Image != "":
	default:
		if w.Entrypoint != nil {
			return w, fmt.Errorf("--entrypoint replaces an image's entrypoint: give --image-archive or --image")
		}
		bin, err := workloadBinary(c)
		if err != nil {
			return w, err
		}
		w.Binary = bin
	}
	return w, nil
}

func workloadBinary(c *cli.Context) (string, error) {
	return besideExecutable(c, "workload", "counter")
}

// besideExecutable returns the path given by flag, or else the binary called name beside this
// executable (where `make build` puts it), checking that it exists.
func besideExecutable(c *cli.Context, flag, name string) (string, error) {
	bin := c.String(flag)
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		bin = filepath.Join(filepath.Dir(exe), name)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s binary: %w (build it with `make build`, or pass --%s)", name, err, flag)
	}
	return bin, nil
}

func startDetachedKfake(ctx context.Context, l *lab.Lab) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("%s:%d", l.BridgeIP, lab.BrokerPort)
	logPath := filepath.Join(l.Dir, lab.KfakeLog)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "lab", "serve-kfake", "--addr", addr, "--lab-dir", l.Dir+"/")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start embedded Kafka: %w", err)
	}
	_ = cmd.Process.Release()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := broker.WaitReady(wctx, addr); err != nil {
		return fmt.Errorf("embedded Kafka (see %s): %w", logf.Name(), err)
	}
	return l.AttachBroker(broker.Embedded, addr)
}

func printLab(l *lab.Lab) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "lab %s\tbridge %s %s\tbroker %s %s\n", l.Name, l.Bridge, l.BridgeIP, l.BrokerKind, l.BrokerAddr)
	fmt.Fprintln(w, "HOST\tADDRESS\tNETNS\tCLOCK (monotonic, boottime ahead of this machine's)\tCONTAINERD")
	for _, h := range l.Hosts {
		clock := "the machine's"
		if !h.Clock.IsZero() {
			clock = fmt.Sprintf("+%v, +%v", h.Clock.Monotonic, h.Clock.Boottime)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.IP, h.NetNS, clock, h.Address())
	}
	return w.Flush()
}

func labExec(c *cli.Context) error {
	if c.NArg() < 3 {
		return fmt.Errorf("lab exec: want HOST ID -- COMMAND [ARGS...], got %d arguments", c.NArg())
	}
	l, err := lab.Load(c.String("base-dir"), c.String("name"))
	if err != nil {
		return err
	}
	h, err := l.Host(c.Args().Get(0))
	if err != nil {
		return err
	}
	args := c.Args().Slice()[2:]
	if args[0] == "--" { // flag parsing stopped at HOST, so "--" arrives as an argument
		args = args[1:]
	}
	if len(args) == 0 {
		return fmt.Errorf("lab exec: want HOST ID -- COMMAND [ARGS...]: no command after --")
	}
	out, err := h.Exec(c.Context, c.Args().Get(1), args...)
	if err != nil {
		return err // it carries the output
	}
	_, err = os.Stdout.Write(out)
	return err
}

func labDown(c *cli.Context) error {
	name, base := c.String("name"), c.String("base-dir")
	if left := lab.Find(base, name); left.Empty() {
		fmt.Printf("lab %s: nothing to remove\n", name)
		return nil
	}
	if err := lab.Teardown(c.Context, base, name); err != nil {
		return err
	}
	fmt.Printf("lab %s: removed\n", name)
	return nil
}

func labStatus(c *cli.Context) error {
	name, base := c.String("name"), c.String("base-dir")
	left := lab.Find(base, name)
	l, loadErr := lab.Load(base, name)
	var down []string
	if loadErr == nil {
		down = deadParts(l)
	}
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"lab": l, "present": left, "not_answering": down})
	}
	if loadErr == nil {
		if err := printLab(l); err != nil {
			return err
		}
	} else {
		fmt.Printf("lab %s: not up\n", name)
	}
	if !left.Empty() {
		fmt.Printf("present on this machine: %s\n", left)
	}
	downCmd := "ftwin-migrate lab down --name " + name
	if base != lab.DefaultBaseDir {
		downCmd += " --base-dir " + base
	}
	switch {
	case loadErr == nil && len(down) > 0:
		fmt.Printf("not answering: %s\nthe lab is damaged (a crashed run?): `%s` removes it\n", strings.Join(down, ", "), downCmd)
	case loadErr != nil && !left.Empty():
		fmt.Printf("these are leftovers of a crashed run: `%s` removes them\n", downCmd)
	}
	return nil
}

// deadParts lists the parts of a lab that should answer and do not.
func deadParts(l *lab.Lab) []string {
	var dead []string
	for _, h := range l.Hosts {
		if c, err := net.DialTimeout("unix", h.Address(), time.Second); err != nil {
			dead = append(dead, "containerd of "+h.Name)
		} else {
			c.Close()
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(h.IP, fmt.Sprint(lab.AgentPort)), time.Second); err != nil {
			dead = append(dead, "agent of "+h.Name)
		} else {
			c.Close()
		}
	}
	if l.BrokerAddr != "" {
		if c, err := net.DialTimeout("tcp", l.BrokerAddr, time.Second); err != nil {
			dead = append(dead, "Kafka broker "+l.BrokerAddr)
		} else {
			c.Close()
		}
	}
	return dead
}

func labSmoke(c *cli.Context) error {
	bin, err := workloadBinary(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	l, err := lab.Up(ctx, lab.Config{Name: c.String("name"), BaseDir: c.String("base-dir"), Subnet: c.String("subnet")})
	if err != nil {
		return err
	}
	defer func() { _ = l.Down(context.WithoutCancel(ctx)) }()
	if err := printLab(l); err != nil {
		return err
	}
	const id = "counter"
	w := lab.Workload{ID: id, Binary: bin, Args: []string{"-mem-mib", fmt.Sprint(c.Int("mem-mib")), "-interval", "50ms"}}
	for _, h := range l.Hosts {
		if _, err := h.ImportImage(ctx, w); err != nil {
			return err
		}
	}
	cloud, fog := l.Hosts[0], l.Hosts[1]
	if err := cloud.Run(ctx, w); err != nil {
		return err
	}
	time.Sleep(time.Second)
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "MOVE\tCHECKPOINT\tTRANSFER\tSENT\tSKIPPED\tRESTORE\tDOWNTIME\tLAST TICK BEFORE\tFIRST TICK AFTER\tMEMORY\t")
	for _, hop := range [][2]*lab.Host{{cloud, fog}, {fog, cloud}} {
		from, to := hop[0], hop[1]
		rep, err := lab.Move(ctx, from, to, id)
		if err != nil {
			return err
		}
		before, err := state.Last(from.LogPath(id))
		if err != nil {
			return err
		}
		after, err := waitNext(ctx, to.LogPath(id), before)
		if err != nil {
			return err
		}
		mem := "intact"
		if !after.MemOK {
			mem = "CORRUPT"
		}
		fmt.Fprintf(tw, "%s→%s\t%v\t%v\t%.1f MiB\t%.1f MiB\t%v\t%v\t%d\t%d\t%s\t\n", from.Name, to.Name,
			rep.Checkpoint.Round(time.Millisecond), rep.Transfer.Duration.Round(time.Millisecond),
			float64(rep.Transfer.BytesSent)/(1<<20), float64(rep.Transfer.BytesSkipped)/(1<<20),
			rep.Restore.Round(time.Millisecond), rep.Downtime.Round(time.Millisecond), before.Tick, after.Tick, mem)
		if after.Tick != before.Tick+1 || !after.MemOK || after.StartNS != before.StartNS {
			tw.Flush()
			return fmt.Errorf("the workload did not continue from its state on %s: before %+v, after %+v", to.Name, before, after)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := l.Down(ctx); err != nil {
		return err
	}
	if left := lab.Find(c.String("base-dir"), l.Name); !left.Empty() {
		return fmt.Errorf("teardown left %s", left)
	}
	fmt.Println("\nsmoke: the workload continued from its state after each move; lab removed, nothing left behind")
	return nil
}

// waitNext waits for the first state in path that continues prev (same process start, later tick).
func waitNext(ctx context.Context, path string, prev state.State) (state.State, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var next state.State
	err := wait.Until(ctx, 50*time.Millisecond, func() (bool, error) {
		f, err := os.Open(path)
		if err != nil {
			return false, nil // not written yet
		}
		defer f.Close()
		states, _ := state.ParseLines(f)
		for _, s := range states {
			if s.StartNS == prev.StartNS && s.Tick > prev.Tick {
				next = s
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return state.State{}, fmt.Errorf("no output continuing tick %d appeared in %s: %w", prev.Tick, path, err)
	}
	return next, nil
}
