package scenario

import "testing"

func TestRebalanceCounter(t *testing.T) {
	cases := []struct {
		name    string
		samples []groupSample
		want    int
	}{
		{"classic: joining is no rebalance", []groupSample{
			{typ: "classic", state: "PreparingRebalance"}, {typ: "classic", state: "CompletingRebalance"},
			{typ: "classic", state: "Stable"}, {typ: "classic", state: "Stable"}}, 0},
		{"classic: a departure from Stable after the first Stable is one", []groupSample{
			{typ: "classic", state: "Stable"}, {typ: "classic", state: "PreparingRebalance"},
			{typ: "classic", state: "CompletingRebalance"}, {typ: "classic", state: "Stable"},
			{typ: "classic", state: "CompletingRebalance"}, {typ: "classic", state: "Stable"}}, 2},
		{"classic: Empty at the end is no rebalance", []groupSample{
			{typ: "classic", state: "Stable"}, {typ: "classic", state: "Empty"}}, 0},
		{"consumer: the epochs of the first join are no rebalance", []groupSample{
			{typ: "consumer", state: "Assigning", epoch: 1}, {typ: "consumer", state: "Reconciling", epoch: 2},
			{typ: "consumer", state: "Stable", epoch: 2}, {typ: "consumer", state: "Stable", epoch: 2}}, 0},
		{"consumer: every epoch bump after the first Stable counts, even unseen in the state", []groupSample{
			{typ: "consumer", state: "Stable", epoch: 2}, {typ: "consumer", state: "Stable", epoch: 3},
			{typ: "consumer", state: "Reconciling", epoch: 5}, {typ: "consumer", state: "Stable", epoch: 5}}, 3},
		{"consumer: a static member's replacement without a new epoch is none", []groupSample{
			{typ: "consumer", state: "Stable", epoch: 4}, {typ: "consumer", state: "Stable", epoch: 4},
			{typ: "consumer", state: "Stable", epoch: 4}}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var rc rebalanceCounter
			n := 0
			for _, s := range c.samples {
				n += rc.observe(s)
			}
			if n != c.want {
				t.Errorf("%d rebalances, want %d", n, c.want)
			}
		})
	}
}
