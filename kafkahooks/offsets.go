package kafkahooks

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Offsets are committed offsets (the next offset to consume) by topic and partition. A
// partition without a committed offset is absent. In JSON the partitions are strings:
// {"sensors":{"0":123,"1":98}}.
type Offsets map[string]map[int32]int64

// OffsetsFromKadm returns the committed offsets of a kadm offset fetch (FetchOffsets,
// FetchOffsetsForTopics). Partitions that answered an error or have no committed offset
// (At < 0) are left out: check resp.Error() first where an error matters.
func OffsetsFromKadm(resp kadm.OffsetResponses) Offsets {
	o := Offsets{}
	resp.Each(func(r kadm.OffsetResponse) {
		if r.Err == nil && r.At >= 0 {
			o.Set(r.Topic, r.Partition, r.At)
		}
	})
	return o
}

// offsetsFromEpochs returns the offsets of a kgo client's view (CommittedOffsets), leaving out
// partitions without a committed offset.
func offsetsFromEpochs(m map[string]map[int32]kgo.EpochOffset) Offsets {
	o := Offsets{}
	for t, ps := range m {
		for p, eo := range ps {
			if eo.Offset >= 0 {
				o.Set(t, p, eo.Offset)
			}
		}
	}
	return o
}

// Set records offset at for topic's partition p. o must not be nil.
func (o Offsets) Set(topic string, p int32, at int64) {
	ps := o[topic]
	if ps == nil {
		ps = map[int32]int64{}
		o[topic] = ps
	}
	ps[p] = at
}

// Lookup returns the offset of topic's partition p, and whether there is one.
func (o Offsets) Lookup(topic string, p int32) (int64, bool) {
	at, ok := o[topic][p]
	return at, ok
}

// Len is the number of partitions with an offset.
func (o Offsets) Len() int {
	n := 0
	for _, ps := range o {
		n += len(ps)
	}
	return n
}

// Equal reports whether o and other hold the same partitions at the same offsets. A topic
// without partitions counts as absent, and nil equals empty.
func (o Offsets) Equal(other Offsets) bool {
	if o.Len() != other.Len() {
		return false
	}
	for t, ps := range o {
		for p, at := range ps {
			if bat, ok := other.Lookup(t, p); !ok || bat != at {
				return false
			}
		}
	}
	return true
}

// Only returns o's offsets of the partitions that are in keys (with any offset there).
func (o Offsets) Only(keys Offsets) Offsets {
	out := Offsets{}
	for t, ps := range keys {
		for p := range ps {
			if at, ok := o.Lookup(t, p); ok {
				out.Set(t, p, at)
			}
		}
	}
	return out
}

// String renders o stably, sorted by topic then partition: [sensors[0]=123 sensors[1]=98].
func (o Offsets) String() string {
	var b strings.Builder
	b.WriteByte('[')
	for _, t := range slices.Sorted(maps.Keys(o)) {
		for _, p := range slices.Sorted(maps.Keys(o[t])) {
			if b.Len() > 1 { // after the first
				b.WriteByte(' ')
			}
			b.WriteString(t)
			b.WriteByte('[')
			b.WriteString(strconv.FormatInt(int64(p), 10))
			b.WriteString("]=")
			b.WriteString(strconv.FormatInt(o[t][p], 10))
		}
	}
	b.WriteByte(']')
	return b.String()
}
