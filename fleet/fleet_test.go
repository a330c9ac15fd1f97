package fleet

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ftwin-migrate/ftwin-migrate/placement"
	"github.com/ftwin-migrate/ftwin-migrate/placestate"
)

func TestWhere(t *testing.T) {
	got := Where(map[string][]Instance{
		"settled":   {{Host: "fog1", Status: "running"}},
		"migrating": {{Host: "fog1", Status: "paused", Migrating: true}, {Host: "cloud", Status: "running", Uncommitted: true}},
		"stopped":   {{Host: "fog2", Status: "stopped"}},
	})
	if !reflect.DeepEqual(got, map[string]string{"settled": "fog1", "migrating": "fog1"}) {
		t.Errorf("Where: %v", got)
	}
	if (Instance{Status: "running", Migrating: true}).Settled() || !(Instance{Status: "running"}).Settled() {
		t.Error("Settled")
	}
}

// A migration whose start the store refuses (a fenced controller) does not run, and says so.
func TestExecuteNotRecorded(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := placestate.Open(ctx, c.ListenAddrs(), placestate.WithTransactionalID("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := placestate.Open(ctx, c.ListenAddrs(), placestate.WithTransactionalID("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	f := &Fleet{} // no lab: nothing may reach Move
	var events []Progress
	ds := []placement.Decision{{Rule: "r", Twin: "tw1", From: "fog1", To: "cloud"}, {Rule: "r", Twin: "tw2", From: "fog1", To: "cloud"}}
	res := f.Execute(ctx, ds, nil, ExecOptions{Concurrency: 2, Store: a, By: "a", Progress: func(p Progress) { events = append(events, p) }})
	for _, r := range res {
		if !errors.Is(r.Err, ErrNotRecorded) || !errors.Is(r.Err, placestate.ErrFenced) || r.Result() != "not started" || r.Moved() {
			t.Errorf("%s: %v (%s)", r.Twin, r.Err, r.Result())
		}
	}
	if len(events) != 2 || !events[1].Done || events[1].Finished != 2 || events[1].Total != 2 {
		t.Errorf("progress %+v", events)
	}
	st, err := b.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Moves) != 0 || len(st.Decisions) != 0 {
		t.Errorf("the fenced store's records are visible: %+v", st)
	}
}

func TestSpec(t *testing.T) {
	s := Spec("tw01", "fog2")
	if s.Host != "fog2" || s.Group != "ftwin-tw01" || s.Input != "sensors-tw01" || s.Output != "twin-state-tw01" {
		t.Errorf("%+v", s)
	}
}
