// Package transfer moves checkpoint images (and the blobs they reference) between containerd
// content stores.
//
// Blobs are content-addressed: a blob the target already holds (a base image layer, say) is
// not sent again, and every blob written is verified against its digest before it is
// committed. Writes happen under a containerd lease on the target, so its garbage collector
// cannot remove a half-copied image.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Stats counts what a copy did.
type Stats struct {
	BlobsSent    int           `json:"blobs_sent"`
	BlobsSkipped int           `json:"blobs_skipped"` // already present on the target
	BytesSent    int64         `json:"bytes_sent"`
	BytesSkipped int64         `json:"bytes_skipped"`
	Duration     time.Duration `json:"duration_ns"`
}

// CopyImage copies image ref, with every blob it references, from the containerd of src to
// that of dst, and registers it there under the same name (replacing an older record).
func CopyImage(ctx context.Context, src, dst *containerd.Client, ref string) (Stats, error) {
	start := time.Now()
	img, err := src.ImageService().Get(ctx, ref)
	if err != nil {
		return Stats{}, fmt.Errorf("transfer: image %q on the source: %w", ref, err)
	}
	dctx, done, err := dst.WithLease(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("transfer: take a lease on the target: %w", err)
	}
	defer done(context.WithoutCancel(ctx))

	st, err := CopyBlobs(ctx, ContentProvider(ctx, src), dctx, dst.ContentStore(), img.Target)
	if err != nil {
		return st, err
	}
	is := dst.ImageService()
	rec := images.Image{Name: img.Name, Target: img.Target, Labels: img.Labels}
	_, err = is.Create(dctx, rec)
	if errdefs.IsAlreadyExists(err) {
		_, err = is.Update(dctx, rec)
	}
	if err != nil {
		return st, fmt.Errorf("transfer: register image %q on the target: %w", ref, err)
	}
	st.Duration = time.Since(start)
	return st, nil
}

// CopyBlobs copies root and every blob it references (OCI indexes and manifests are followed)
// from src to dst, skipping blobs dst already has. sctx is used for src, dctx (which should
// carry a lease of dst) for dst.
func CopyBlobs(sctx context.Context, src content.Provider, dctx context.Context, dst content.Store, root ocispec.Descriptor) (Stats, error) {
	var st Stats
	handler := images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if _, err := dst.Info(dctx, desc.Digest); err == nil {
			st.BlobsSkipped++
			st.BytesSkipped += desc.Size
		} else if !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("transfer: look up %s on the target: %w", desc.Digest, err)
		} else {
			ra, err := src.ReaderAt(sctx, desc)
			if err != nil {
				return nil, fmt.Errorf("transfer: read %s on the source: %w", desc.Digest, err)
			}
			// WriteBlob verifies size and digest before it commits.
			err = content.WriteBlob(dctx, dst, "ftwin-"+desc.Digest.String(), content.NewReader(ra), desc)
			ra.Close()
			if err != nil {
				return nil, fmt.Errorf("transfer: write %s (%s, %d bytes) on the target: %w", desc.Digest, desc.MediaType, desc.Size, err)
			}
			st.BlobsSent++
			st.BytesSent += desc.Size
		}
		children, err := images.Children(sctx, src, desc)
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("transfer: children of %s: %w", desc.Digest, err)
		}
		if err := setGCRefs(dctx, dst, desc, children); err != nil {
			return nil, err
		}
		return children, nil
	})
	// Walk visits one blob at a time, so the handler may update st without locking.
	err := images.Walk(sctx, handler, root)
	return st, err
}

// setGCRefs labels desc on dst with references to its children, so that containerd's garbage
// collector keeps them for as long as desc is kept (once the copy's lease is gone).
func setGCRefs(ctx context.Context, dst content.Store, desc ocispec.Descriptor, children []ocispec.Descriptor) error {
	if len(children) == 0 {
		return nil
	}
	info := content.Info{Digest: desc.Digest, Labels: map[string]string{}}
	var fields []string
	for i, ch := range children {
		k := fmt.Sprintf("containerd.io/gc.ref.content.%d", i)
		info.Labels[k] = ch.Digest.String()
		fields = append(fields, "labels."+k)
	}
	if _, err := dst.Update(ctx, info, fields...); errdefs.IsFailedPrecondition(err) {
		return nil // a plain directory store has neither labels nor a garbage collector
	} else if err != nil {
		return fmt.Errorf("transfer: label %s with its children: %w", desc.Digest, err)
	}
	return nil
}
