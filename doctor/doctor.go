// Package doctor checks what a Linux host offers and lacks for checkpoint/restore and live
// migration of containerd containers with CRIU.
//
// Run returns a Report: one Check per row, each OK, WARN or FAIL, with a Fix that tells the
// administrator what to do about every row that is not OK. A FAIL row blocks migration
// (see Report.Blockers); a WARN row names a capability the host lacks (pre-copy, post-copy)
// or something ftwin-migrate works around by itself.
//
// CRIU is asked through its command line (`criu --version`, `criu check`,
// `criu check --feature NAME`), so the report says exactly what the installed CRIU says.
// Hardware breakpoints are probed for real (HWBreakpointsWork): CRIU's own check only tests
// that the debug registers can be written, not that they fire.
package doctor

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// DefaultContainerdAddress is the containerd socket checked unless WithContainerdAddress
// names another.
const DefaultContainerdAddress = "/run/containerd/containerd.sock"

// Status grades a Check.
type Status int

const (
	// OK means nothing needs doing.
	OK Status = iota
	// Warn means a capability is missing or worked around; migration still works.
	Warn
	// Fail means migration cannot work on this host until the row is fixed.
	Fail
)

// String returns "OK", "WARN" or "FAIL".
func (s Status) String() string {
	switch s {
	case OK:
		return "OK"
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// MarshalText makes a Status appear as its String in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Check is one row of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix tells the administrator what to do; set on every row that is not OK.
	Fix string `json:"fix,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Checks []Check `json:"checks"`
	// CRIUVersion is the installed CRIU release as `criu --version` prints it ("4.2.1"),
	// empty when CRIU was not found.
	CRIUVersion string `json:"criu_version,omitempty"`
	// Features maps CRIU feature names, as `criu check --feature NAME` knows them, to
	// whether CRIU reports them available on this host.
	Features map[string]bool `json:"features,omitempty"`
	// HWBreakpoints reports whether hardware breakpoints fire (false also when the probe
	// could not run; its row then says why).
	HWBreakpoints bool `json:"hw_breakpoints"`
}

// Opt configures Run.
type Opt func(*config)

type config struct {
	containerdAddress string
	addressRequested  bool
	checkpointDir     string
}

// WithContainerdAddress checks the containerd daemon at addr instead of
// DefaultContainerdAddress. A daemon that does not answer there is then a FAIL, not a WARN.
func WithContainerdAddress(addr string) Opt {
	return func(c *config) { c.containerdAddress, c.addressRequested = addr, true }
}

// WithCheckpointDir checks free space in dir, where checkpoints will be written, instead
// of os.TempDir().
func WithCheckpointDir(dir string) Opt {
	return func(c *config) { c.checkpointDir = dir }
}

// Run checks the host. It does not fail: whatever goes wrong while checking becomes a row.
// ctx bounds the whole run.
func Run(ctx context.Context, opts ...Opt) Report {
	cfg := config{containerdAddress: DefaultContainerdAddress, checkpointDir: os.TempDir()}
	for _, o := range opts {
		o(&cfg)
	}
	var r Report
	r.checkCRIU(ctx)
	r.checkHWBreakpoints()
	r.Checks = append(r.Checks,
		containerdBinaryCheck(ctx),
		containerdDaemonCheck(ctx, cfg.containerdAddress, cfg.addressRequested),
		runcCheck(ctx),
		Clocks(ctx),
		Cgroups(),
		toolCheck("containerd-shim-runc-v2", "containerd runs containers through it"),
		toolCheck("iptables-restore", "CRIU locks the network of a container being dumped with it"),
		labToolsCheck(),
		kafkaCheck(""),
		diskCheck(cfg.checkpointDir),
		rootCheck(),
	)
	return r
}

// Blockers returns the FAIL rows: the host cannot migrate containers until they are fixed.
func (r Report) Blockers() []Check {
	var fails []Check
	for _, c := range r.Checks {
		if c.Status == Fail {
			fails = append(fails, c)
		}
	}
	return fails
}

// WriteTable writes the report as an aligned text table, with a "fix:" line under each row
// that is not OK.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
		if c.Status != OK {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("doctor: write table: %w", err)
	}
	return nil
}
