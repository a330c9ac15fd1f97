// Package memstate holds the counter workload's memory: a buffer filled with
// deterministic pseudo-random content, mutated a little on every tick, with a
// checksum that is updated incrementally and can be re-verified against the
// whole buffer.
//
// Everything is a pure function of (size, seed, ticks applied): a Buffer built
// with New(mib, seed) and stepped through ticks 1..N always has the same
// checksum, so a test can compute the checksum a restored process must report.
package memstate

import (
	"fmt"
	"math/bits"
)

// MiB is the unit of the buffer size.
const MiB = 1 << 20

// wordsPerStep is how many 8-byte words Step rewrites.
const wordsPerStep = 4

// golden is the splitmix64 increment (2^64 / golden ratio).
const golden = 0x9e3779b97f4a7c15

// Buffer is the workload's memory. It is not safe for concurrent use.
type Buffer struct {
	words []uint64
	seed  uint64
	sum   uint64 // tracked checksum, updated incrementally
}

// New allocates mib MiB, fills every word from seed (which touches every
// page) and computes the initial checksum. It panics if mib < 1.
func New(mib int, seed uint64) *Buffer {
	if mib < 1 {
		panic(fmt.Sprintf("memstate: size must be at least 1 MiB, got %d", mib))
	}
	b := &Buffer{words: make([]uint64, mib*MiB/8), seed: seed}
	for i := range b.words {
		b.words[i] = mix(seed + uint64(i)*golden)
	}
	b.sum = b.fullSum()
	return b
}

// Step applies the mutation of the given tick: it rewrites a few words at
// positions derived from (seed, tick) and updates the tracked checksum.
func (b *Buffer) Step(tick uint64) {
	n := uint64(len(b.words))
	for k := uint64(0); k < wordsPerStep; k++ {
		r := mix(b.seed ^ mix(tick*wordsPerStep+k))
		i, _ := bits.Mul64(r, n) // uniform index in [0, n)
		b.sum -= term(i, b.words[i])
		b.words[i] = mix(r + golden)
		b.sum += term(i, b.words[i])
	}
}

// Verify recomputes the checksum from the whole buffer and reports whether it
// matches the tracked one. It reads every word, so its cost grows with the
// buffer size: about 2 GB/s, a quarter second for 512 MiB.
func (b *Buffer) Verify() bool {
	return b.fullSum() == b.sum
}

// Checksum returns the tracked checksum as 16 lowercase hex digits.
func (b *Buffer) Checksum() string {
	return fmt.Sprintf("%016x", b.sum)
}

func (b *Buffer) fullSum() uint64 {
	var s uint64
	for i, w := range b.words {
		s += term(uint64(i), w)
	}
	return s
}

// term is word w's contribution at index i. The checksum is the sum of all
// terms modulo 2^64, so one word can be swapped out in O(1); the index is
// mixed in so that moved or swapped words change the sum too.
func term(i, w uint64) uint64 {
	return mix(w ^ (i * golden))
}

// mix is the splitmix64 finalizer, a cheap bijective 64-bit hash.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
