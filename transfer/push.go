package transfer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Remote is the receiving side of a push: a migration agent's blob store.
type Remote interface {
	// Missing returns which of the given blobs the remote does not hold.
	Missing(ctx context.Context, blobs []ocispec.Descriptor) ([]ocispec.Descriptor, error)
	// Put streams one blob, zstd-compressed, from r. The remote verifies the blob's size and
	// digest before it keeps it. It returns the compressed bytes sent.
	Put(ctx context.Context, desc ocispec.Descriptor, r io.Reader) (wire int64, err error)
}

// PushStats extends Stats with what crossed the wire.
type PushStats struct {
	Stats
	// WireBytes is the compressed size of what was sent.
	WireBytes int64 `json:"wire_bytes"`
}

// CompressionRatio is uncompressed bytes sent per byte on the wire (0 when nothing was sent).
func (s PushStats) CompressionRatio() float64 {
	if s.WireBytes == 0 {
		return 0
	}
	return float64(s.BytesSent) / float64(s.WireBytes)
}

// Progress is told how many uncompressed bytes of total have been sent so far.
type Progress func(done, total int64)

// Descriptors lists root and every blob it references, parents first.
func Descriptors(ctx context.Context, src content.Provider, root ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var all []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	err := images.Walk(ctx, images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if seen[d.Digest] {
			return nil, nil
		}
		seen[d.Digest] = true
		all = append(all, d)
		children, err := images.Children(ctx, src, d)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("transfer: children of %s: %w", d.Digest, err)
		}
		return children, nil
	}), root)
	return all, err
}

// Push sends root and the blobs it references from src to dst, skipping those dst holds.
// Each blob is streamed (never held whole in memory) and compressed with zstd.
func Push(ctx context.Context, src content.Provider, root ocispec.Descriptor, dst Remote, progress Progress) (PushStats, error) {
	var st PushStats
	all, err := Descriptors(ctx, src, root)
	if err != nil {
		return st, err
	}
	missing, err := dst.Missing(ctx, all)
	if err != nil {
		return st, fmt.Errorf("transfer: ask the target which blobs it lacks: %w", err)
	}
	need := map[digest.Digest]bool{}
	var total int64
	for _, d := range missing {
		need[d.Digest] = true
		total += d.Size
	}
	for _, d := range all {
		if !need[d.Digest] {
			st.BlobsSkipped++
			st.BytesSkipped += d.Size
		}
	}
	// Children before parents: the target can check references as they arrive.
	for i := len(all) - 1; i >= 0; i-- {
		d := all[i]
		if !need[d.Digest] {
			continue
		}
		wire, err := putBlob(ctx, src, d, dst, func(n int64) {
			if progress != nil {
				progress(st.BytesSent+n, total)
			}
		})
		st.WireBytes += wire
		if err != nil {
			return st, err
		}
		st.BlobsSent++
		st.BytesSent += d.Size
	}
	return st, nil
}

func putBlob(ctx context.Context, src content.Provider, d ocispec.Descriptor, dst Remote, progress func(int64)) (int64, error) {
	ra, err := src.ReaderAt(ctx, d)
	if err != nil {
		return 0, fmt.Errorf("transfer: read %s on the source: %w", d.Digest, err)
	}
	defer ra.Close()
	pr, pw := io.Pipe()
	go func() {
		enc, err := zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		r := &countingReader{r: content.NewReader(ra), progress: progress}
		if _, err := io.Copy(enc, r); err != nil {
			enc.Close()
			pw.CloseWithError(fmt.Errorf("read %s: %w", d.Digest, err))
			return
		}
		pw.CloseWithError(enc.Close())
	}()
	wire, err := dst.Put(ctx, d, pr)
	pr.CloseWithError(errors.New("transfer: put ended"))
	if err != nil {
		return wire, fmt.Errorf("transfer: send %s (%s, %d bytes): %w", d.Digest, d.MediaType, d.Size, err)
	}
	return wire, nil
}

type countingReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

// MaxWindow is the largest zstd window a receiver accepts (what Push's encoder uses is far
// smaller): a stream asking for more is refused before memory is allocated for it.
const MaxWindow = 64 << 20

// Receive decompresses a blob sent by Push from r and writes it to store, committing it only
// if its size and digest match desc. ctx should carry the lease the blob is kept under.
func Receive(ctx context.Context, store content.Ingester, desc ocispec.Descriptor, r io.Reader) error {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxWindow))
	if err != nil {
		return fmt.Errorf("transfer: zstd: %w", err)
	}
	defer dec.Close()
	// A ref of its own: a writer resumes an ingest of the same ref, and a failed one must not
	// be resumed (its bytes may be the corrupt ones).
	var b [8]byte
	_, _ = rand.Read(b[:])
	ref := "ftwin-recv-" + desc.Digest.Encoded()[:12] + "-" + hex.EncodeToString(b[:])
	// At most one byte more than declared is written: a stream that decompresses to more (a
	// zstd bomb) fails the size check at commit instead of filling the disk first.
	if err := content.WriteBlob(ctx, store, ref, io.LimitReader(dec, desc.Size+1), desc); err != nil {
		if m, ok := store.(content.IngestManager); ok {
			_ = m.Abort(context.WithoutCancel(ctx), ref)
		}
		return fmt.Errorf("transfer: receive %s: %w", desc.Digest, err)
	}
	return nil
}
