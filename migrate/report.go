package migrate

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/kafkahooks"
	"github.com/ftwin-migrate/ftwin-migrate/transfer"
)

// Report is what a migration did and where its time went.
type Report struct {
	Container string `json:"container"`
	From      string `json:"from"`
	To        string `json:"to"`
	Result    string `json:"result"` // Committed, RolledBack or RollbackFailed
	// Mode is "stop-and-copy" or "replay".
	Mode    string    `json:"mode"`
	Error   string    `json:"error,omitempty"`
	Started time.Time `json:"started"`
	// Session is the target agent's session id.
	Session string `json:"session,omitempty"`
	// Phases in the order they ran; Start is relative to Started.
	Phases []PhaseReport `json:"phases"`
	// Undo lists what the rollback undid, in the order it ran (empty unless rolled back).
	Undo []UndoReport `json:"undo,omitempty"`
	// Downtime runs from the source's freeze to the end of the resume phase (the restored
	// application told to continue, or, without a hook, its task running) — or, after a
	// rollback, to the source's thaw (0 if it was never frozen or never thawed). In a replay
	// migration it is the longer of the source's two pauses (Replay.SnapshotPause and
	// Replay.CutoverPause): the stream's longest gap.
	Downtime time.Duration `json:"downtime_ns"`
	// Replay is what a replay migration measured (nil in stop-and-copy).
	Replay *ReplayReport `json:"replay,omitempty"`
	Total  time.Duration `json:"total_ns"`
	// CRIU holds CRIU's dump statistics under its own (and Podman's --print-stats) names:
	// freezing_time, frozen_time, memdump_time, memwrite_time (µs), pages_scanned, pages_written.
	CRIU *stats.DumpStatsEntry `json:"criu_dump_statistics,omitempty"`
	// CRIURestore holds CRIU's restore statistics on the target: restore_time, forking_time
	// (µs), pages_restored.
	CRIURestore *stats.RestoreStatsEntry `json:"criu_restore_statistics,omitempty"`
	// RestoreTime is the agent's wall time for the restore (container creation + CRIU restore).
	RestoreTime time.Duration `json:"restore_time_ns"`
	// TCP is what became of the container's established TCP connections: "established" (kept
	// open) or "close" (restored closed: the application reconnects).
	TCP string `json:"tcp,omitempty"`
	// Address is the container's own address, which moved with it (nil: it took the target
	// host's network).
	Address *agent.ContainerAddress `json:"address,omitempty"`
	// TargetLog is the file on the target host where the restored container's output goes.
	TargetLog string `json:"target_log,omitempty"`
	// Transfer counts everything sent: the checkpoint's blobs and the CRIU image directory
	// (also reported alone in Image).
	Transfer         transfer.PushStats `json:"transfer"`
	Image            *transfer.DirStats `json:"criu_image,omitempty"`
	CompressionRatio float64            `json:"compression_ratio"`
	CheckpointIndex  string             `json:"checkpoint_index,omitempty"`
	// Boundary is what the application's hook reported in the quiesce phase (nil: no hook).
	Boundary *kafkahooks.Boundary `json:"boundary"`
	// BoundaryCheck says whether the broker and the restored copy agreed with the boundary.
	BoundaryCheck *BoundaryCheck `json:"boundary_check,omitempty"`
	// ExpectedDowntime is the preflight's estimate, compared with the group session timeout.
	ExpectedDowntime time.Duration `json:"expected_downtime_ns,omitempty"`
	Target           *agent.Hello  `json:"target,omitempty"`
	// Evidence lists what showed, before the commit, that the restored copy works.
	Evidence []string `json:"evidence,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// UndoReport is one undo the rollback ran.
type UndoReport struct {
	Name     string `json:"name"`
	PushedBy Phase  `json:"pushed_by"`
	On       string `json:"on"` // "source" or "target"
	// BestEffort: its failure is a warning (it leaves only what is removed anyway), not a
	// failed rollback.
	BestEffort bool `json:"best_effort,omitempty"`
	// Skipped: it was not run, for the reason in Error.
	Skipped  bool          `json:"skipped,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	Error    string        `json:"error,omitempty"`
}

// PhaseReport is one phase's timing.
type PhaseReport struct {
	Name     Phase         `json:"name"`
	Start    time.Duration `json:"start_ns"`
	Duration time.Duration `json:"duration_ns"`
	Error    string        `json:"error,omitempty"`
}

// WriteSummary prints the report for a person.
func (r *Report) WriteSummary(w io.Writer) error {
	fmt.Fprintf(w, "migration of %s from %s to %s: %s\n", r.Container, r.From, r.To, strings.ToUpper(r.Result))
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PHASE\tSTART\tDURATION\t")
	for _, p := range r.Phases {
		status := ""
		if p.Error != "" {
			status = "FAILED: " + p.Error
		}
		fmt.Fprintf(tw, "  %s\t+%v\t%v\t%s\n", p.Name, p.Start.Round(time.Millisecond), p.Duration.Round(time.Millisecond), status)
	}
	tw.Flush()
	if len(r.Undo) > 0 {
		fmt.Fprintln(w, "  rollback:")
		for _, u := range r.Undo {
			status := "done"
			switch {
			case u.Skipped:
				status = "SKIPPED: " + u.Error
			case u.Error != "":
				status = "FAILED: " + u.Error
			}
			fmt.Fprintf(w, "    %s (%s, pushed by %s): %v %s\n", u.Name, u.On, u.PushedBy, u.Duration.Round(time.Millisecond), status)
		}
	}
	switch {
	case r.Replay != nil:
		rp := r.Replay
		fmt.Fprintf(w, "  replay: snapshot pause %v; catch-up %v (%d records replayed, lag %d at the cutover); cutover pause %v; total %v\n",
			rp.SnapshotPause.Round(time.Millisecond), rp.CatchUp.Round(time.Millisecond), rp.Replayed, rp.LagAtCutover,
			rp.CutoverPause.Round(time.Millisecond), r.Total.Round(time.Millisecond))
		for _, st := range []struct {
			name  string
			steps []Step
		}{{"snapshot", rp.SnapshotSteps}, {"cutover", rp.CutoverSteps}} {
			if len(st.steps) > 0 {
				var parts []string
				for _, s := range st.steps {
					parts = append(parts, fmt.Sprintf("%s %v", s.Name, s.Duration.Round(time.Millisecond)))
				}
				fmt.Fprintf(w, "  %s pause: %s\n", st.name, strings.Join(parts, ", "))
			}
		}
		if rp.SourceDigest != "" || rp.CopyDigest != "" {
			fmt.Fprintf(w, "  digests at the cutover boundary %s: source %s, copy %s (equal: %s)\n", rp.CutoverBoundary, short(rp.SourceDigest), short(rp.CopyDigest), yesNo(rp.SourceDigest == rp.CopyDigest))
		}
	case r.Result == Committed:
		fmt.Fprintf(w, "  downtime %v (frozen → resumed on %s); total %v\n", r.Downtime.Round(time.Millisecond), r.To, r.Total.Round(time.Millisecond))
	case r.Downtime > 0:
		fmt.Fprintf(w, "  downtime %v (frozen → thawed here); total %v\n", r.Downtime.Round(time.Millisecond), r.Total.Round(time.Millisecond))
	}
	if r.CRIU != nil {
		fmt.Fprintf(w, "  CRIU: frozen %v, memdump %v, memwrite %v, %d pages written\n",
			time.Duration(r.CRIU.GetFrozenTime())*time.Microsecond, time.Duration(r.CRIU.GetMemdumpTime())*time.Microsecond,
			time.Duration(r.CRIU.GetMemwriteTime())*time.Microsecond, r.CRIU.GetPagesWritten())
	}
	if r.CRIURestore != nil {
		fmt.Fprintf(w, "  CRIU restore on %s: restore %v, forking %v, %d pages restored\n", r.To,
			time.Duration(r.CRIURestore.GetRestoreTime())*time.Microsecond, time.Duration(r.CRIURestore.GetForkingTime())*time.Microsecond,
			r.CRIURestore.GetPagesRestored())
	}
	if r.TargetLog != "" && r.Result != RolledBack {
		fmt.Fprintf(w, "  the restored container's output on %s: %s\n", r.To, r.TargetLog)
	}
	if r.Transfer.BlobsSent+r.Transfer.BlobsSkipped > 0 {
		fmt.Fprintf(w, "  transfer: %d blobs sent (%.1f MiB, %.1f MiB on the wire, ratio %.2f), %d already on the target (%.1f MiB)\n",
			r.Transfer.BlobsSent, mib(r.Transfer.BytesSent), mib(r.Transfer.WireBytes), r.CompressionRatio,
			r.Transfer.BlobsSkipped, mib(r.Transfer.BytesSkipped))
	}
	switch {
	case r.Address != nil:
		fmt.Fprintf(w, "  network: its own address %s (MAC %s) moved with it; TCP connections restored %s\n", r.Address.IP, r.Address.MAC, r.TCP)
	case r.TCP != "":
		fmt.Fprintf(w, "  network: the target host's; TCP connections restored %s\n", r.TCP)
	}
	if b := r.Boundary; b == nil {
		fmt.Fprintln(w, "  boundary: none taken (no application hook)")
	} else {
		fmt.Fprintf(w, "  boundary: group %s instance %s generation %d offsets %s\n", b.Group, b.InstanceID, b.Generation, b.Offsets)
	}
	if c := r.BoundaryCheck; c != nil {
		resumed := "not resumed"
		if c.Resumed {
			resumed = "resumed at the boundary " + yesNo(c.ResumedMatch)
		}
		fmt.Fprintf(w, "  boundary check: committed on the broker before the checkpoint %s; %s\n", yesNo(c.CommittedBefore), resumed)
	}
	if len(r.Evidence) > 0 {
		fmt.Fprintf(w, "  evidence that the copy works: %s\n", strings.Join(r.Evidence, "; "))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
	return nil
}

func (r *Report) addEvidence(e string) {
	if !slices.Contains(r.Evidence, e) {
		r.Evidence = append(r.Evidence, e)
	}
}

// verified says whether the evidence goes beyond a running task: a probe that passed or an
// application that resumed at its boundary.
func (r *Report) verified() bool {
	for _, e := range r.Evidence {
		if strings.HasPrefix(e, "the probe ") || e == "the application resumed at the boundary" || e == "the copy took over at the boundary" {
			return true
		}
	}
	return false
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
