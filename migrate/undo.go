package migrate

import (
	"context"
	"slices"
	"time"
)

// where an undo acts: on this host, or on the target through the network.
type where bool

const (
	local  where = false
	remote where = true
)

// How much an undo matters.
type need bool

const (
	// required: if it fails, exactly one working copy is not assured: the rollback failed.
	required need = false
	// bestEffort: its failure leaves only garbage that is removed anyway (a session the agent
	// drops once it idles past its timeout or restarts): a warning.
	bestEffort need = true
)

// undoAbortTarget is the undo of everything the target holds: pushed when the session opens
// (best effort: the target holds only blobs then), and pushed again, required, when a restored
// copy may run there (so it moves to the top and runs before the source thaws).
const undoAbortTarget = "abort the session on the target"

// undo reverses what a phase did.
type undo struct {
	name  string
	phase Phase
	where where
	need  need
	fn    func(context.Context) error
	// timeout, if set, replaces the default timeout of where.
	timeout time.Duration
	// guard, if set, is asked first: an error skips the undo (and counts as its failure).
	guard func() error
}

// undoStack holds the undos of the phases that ran, the latest on top.
type undoStack []undo

// push puts an undo on top. An undo of the same name already on the stack moves to the top
// instead: it runs once, at the latest point it is needed.
func (s *undoStack) push(name string, p Phase, w where, n need, fn func(context.Context) error) {
	s.pushUndo(undo{name: name, phase: p, where: w, need: n, fn: fn})
}

// pushUndo is push for an undo with a timeout or a guard of its own.
func (s *undoStack) pushUndo(u undo) {
	*s = slices.DeleteFunc(*s, func(o undo) bool { return o.name == u.name })
	*s = append(*s, u)
}

// drop removes the undo called name: the phase undid it itself (a thaw after its dump).
func (s *undoStack) drop(name string) {
	*s = slices.DeleteFunc(*s, func(o undo) bool { return o.name == name })
}

// unwind runs the undos from the top down, each under a context of its own (localTimeout or
// remoteTimeout), and reports every one: a failed undo does not stop the ones below it.
func (s undoStack) unwind(ctx context.Context, localTimeout, remoteTimeout time.Duration) []UndoReport {
	var out []UndoReport
	for _, u := range slices.Backward(s) {
		timeout, where := localTimeout, "source"
		if u.where == remote {
			timeout, where = remoteTimeout, "target"
		}
		if u.timeout > 0 {
			timeout = u.timeout
		}
		r := UndoReport{Name: u.name, PushedBy: u.phase, On: where, BestEffort: bool(u.need)}
		if u.guard != nil {
			if err := u.guard(); err != nil {
				r.Skipped, r.Error = true, err.Error()
				out = append(out, r)
				continue
			}
		}
		uctx, cancel := context.WithTimeout(ctx, timeout)
		start := time.Now()
		err := u.fn(uctx)
		cancel()
		r.Duration = time.Since(start)
		if err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return out
}
