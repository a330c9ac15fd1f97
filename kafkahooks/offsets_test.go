package kafkahooks

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestOffsetsEqual(t *testing.T) {
	a := Offsets{"s": {0: 1, 1: 2}, "t": {3: 4}}
	for _, c := range []struct {
		name string
		b    Offsets
		want bool
	}{
		{"same", Offsets{"t": {3: 4}, "s": {1: 2, 0: 1}}, true},
		{"other offset", Offsets{"s": {0: 1, 1: 3}, "t": {3: 4}}, false},
		{"partition missing", Offsets{"s": {0: 1}, "t": {3: 4}}, false},
		{"partition more", Offsets{"s": {0: 1, 1: 2, 2: 0}, "t": {3: 4}}, false},
		{"other topic", Offsets{"s": {0: 1, 1: 2}, "u": {3: 4}}, false},
		{"empty topic counts as absent", Offsets{"s": {0: 1, 1: 2}, "t": {3: 4}, "u": {}}, true},
		{"nil", nil, false},
	} {
		if got := a.Equal(c.b); got != c.want {
			t.Errorf("%s: %v.Equal(%v) = %v, want %v", c.name, a, c.b, got, c.want)
		}
		if got := c.b.Equal(a); got != c.want {
			t.Errorf("%s: not symmetric", c.name)
		}
	}
	if !Offsets(nil).Equal(Offsets{}) || !(Offsets{"x": {}}).Equal(nil) {
		t.Error("nil, empty and empty topics differ")
	}
}

func TestOffsetsString(t *testing.T) {
	o := Offsets{"t": {10: 5, 2: 7}, "s": {0: 123}, "e": {}}
	if got, want := o.String(), "[s[0]=123 t[2]=7 t[10]=5]"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := Offsets(nil).String(); got != "[]" {
		t.Errorf("nil String() = %q, want []", got)
	}
}

func TestOffsetsOnly(t *testing.T) {
	broker := Offsets{"s": {0: 1, 1: 2, 2: 3}, "t": {0: 9}}
	got := broker.Only(Offsets{"s": {1: 0, 5: 0}})
	if want := (Offsets{"s": {1: 2}}); !got.Equal(want) {
		t.Errorf("Only = %v, want %v", got, want)
	}
}

func TestOffsetsFromKadm(t *testing.T) {
	var resp kadm.OffsetResponses
	resp.Add(kadm.OffsetResponse{Offset: kadm.Offset{Topic: "s", Partition: 0, At: 12}})
	resp.Add(kadm.OffsetResponse{Offset: kadm.Offset{Topic: "s", Partition: 1, At: -1}})
	resp.Add(kadm.OffsetResponse{Offset: kadm.Offset{Topic: "s", Partition: 2, At: 5}, Err: errors.New("boom")})
	resp.Add(kadm.OffsetResponse{Offset: kadm.Offset{Topic: "t", Partition: 3, At: 0}})
	if got, want := OffsetsFromKadm(resp), (Offsets{"s": {0: 12}, "t": {3: 0}}); !got.Equal(want) {
		t.Errorf("OffsetsFromKadm = %v, want %v", got, want)
	}
	eo := map[string]map[int32]kgo.EpochOffset{"s": {0: {Offset: 4}, 1: {Offset: -1}}}
	if got, want := offsetsFromEpochs(eo), (Offsets{"s": {0: 4}}); !got.Equal(want) {
		t.Errorf("offsetsFromEpochs = %v, want %v", got, want)
	}
}

// TestOffsetsRoundTrip pins the wire format of PROTOCOL.md: partitions as strings.
func TestOffsetsRoundTrip(t *testing.T) {
	b, err := json.Marshal(Offsets{"sensors": {1: 98, 0: 123}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"sensors":{"0":123,"1":98}}`; got != want {
		t.Errorf("marshalled %s, want %s", got, want)
	}
	var o Offsets
	if err := json.Unmarshal([]byte(`{"sensors":{"0":123,"1":98}}`), &o); err != nil {
		t.Fatal(err)
	}
	if !o.Equal(Offsets{"sensors": {0: 123, 1: 98}}) {
		t.Errorf("unmarshalled %v", o)
	}
}
