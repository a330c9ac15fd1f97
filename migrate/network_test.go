package migrate

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ftwin-migrate/ftwin-migrate/agent"
	"github.com/ftwin-migrate/ftwin-migrate/restore"
)

// fakeNetwork is the source host's side of a container address that moves (SourceNetwork).
type fakeNetwork struct {
	*world
	addr *agent.ContainerAddress
}

func (n fakeNetwork) Address(ctx context.Context, _, _ string) (*agent.ContainerAddress, error) {
	return n.addr, n.call(ctx, "net.Address")
}
func (n fakeNetwork) Disconnect(ctx context.Context, _, _ string) error {
	return n.call(ctx, "net.Disconnect")
}
func (n fakeNetwork) Reconnect(ctx context.Context, _, _ string) error {
	return n.call(ctx, "net.Reconnect")
}
func (n fakeNetwork) Remove(ctx context.Context, _, _ string) error { return n.call(ctx, "net.Remove") }

var ownAddress = &agent.ContainerAddress{IP: "10.231.0.100/24", MAC: "02:fa:0a:e7:00:64"}

// TestNetworkMovesWithTheContainer: a container with an address of its own has it taken off
// the source's network after the freeze and before the dump, and removed there after the
// commit; its connections are restored established unless told otherwise; the report says so.
func TestNetworkMovesWithTheContainer(t *testing.T) {
	w := newWorld(t)
	rep, err := w.run(t, Options{Network: fakeNetwork{w, ownAddress}})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range successCalls {
		switch c {
		case "target.Open":
			want = append(want, "net.Address", c)
		case "source.Checkpoint":
			want = append(want, "net.Disconnect", c)
		case "source.Remove":
			want = append(want, c, "net.Remove")
		default:
			want = append(want, c)
		}
	}
	if !slices.Equal(w.log, want) {
		t.Errorf("calls\n got %v\nwant %v", w.log, want)
	}
	if rep.TCP != string(restore.TCPEstablished) || rep.Address != ownAddress {
		t.Errorf("report: tcp %q address %v, want established and %v", rep.TCP, rep.Address, ownAddress)
	}

	// Told --tcp close, it stays closed; on the host's network, closed by default.
	w = newWorld(t)
	if rep, _ := w.run(t, Options{Network: fakeNetwork{w, ownAddress}, TCP: restore.TCPClose}); rep.TCP != string(restore.TCPClose) {
		t.Errorf("with TCP close asked: %q", rep.TCP)
	}
	w = newWorld(t)
	if rep, _ := w.run(t, Options{Network: fakeNetwork{w, nil}}); rep.TCP != string(restore.TCPClose) || slices.Contains(w.log, "net.Disconnect") {
		t.Errorf("a container on its host's network: tcp %q, calls %v", rep.TCP, w.log)
	}
}

// TestNetworkRollback: a failure after the address left the source's network puts it back
// (before the thaw), and a failure to take it off rolls back before any dump.
func TestNetworkRollback(t *testing.T) {
	w := newWorld(t)
	w.fail["target.Restore"] = errInjected
	rep, err := w.run(t, Options{Network: fakeNetwork{w, ownAddress}})
	if err == nil {
		t.Fatal("the migration succeeded despite the restore failure")
	}
	var undone []string
	for _, u := range rep.Undo {
		undone = append(undone, u.Name)
	}
	if i, j := slices.Index(undone, "reconnect the source's address"), slices.Index(undone, undoThaw); i < 0 || j < i {
		t.Errorf("undo %v: want the address reconnected, before the thaw", undone)
	}
	if slices.Contains(w.log, "net.Remove") {
		t.Errorf("the source's network removed on a rollback: %v", w.log)
	}

	w = newWorld(t)
	w.fail["net.Disconnect"] = errInjected
	rep, err = w.run(t, Options{Network: fakeNetwork{w, ownAddress}})
	if err == nil || !strings.Contains(err.Error(), "off the network") || slices.Contains(w.log, "source.Checkpoint") {
		t.Errorf("disconnect failure: err %v, calls %v: want a rollback before the dump", err, w.log)
	}
	if src, _ := w.copies(); !src || rep.Result != RolledBack {
		t.Errorf("after the rollback: source runs %v, result %q", src, rep.Result)
	}

	// Replay cannot move an address: refused in the preflight, before anything is frozen.
	w = newWorld(t)
	_, err = w.run(t, Options{Network: fakeNetwork{w, ownAddress}, Mode: ModeReplay})
	if err == nil || !strings.Contains(err.Error(), "stop-and-copy") || slices.Contains(w.log, "source.Freeze") {
		t.Errorf("replay with an address of its own: err %v, calls %v", err, w.log)
	}
}
