package transfer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// RefAnnotation names the image in a directory written by ExportDir.
const RefAnnotation = ocispec.AnnotationRefName

// ExportDir writes image ref of client, with every blob it references, to dir as an OCI
// image layout (oci-layout, index.json, blobs/sha256/...), for offline moves and inspection.
// annotations are added to the layout's index entry.
func ExportDir(ctx context.Context, client *containerd.Client, ref, dir string, annotations map[string]string) (Stats, error) {
	img, err := client.ImageService().Get(ctx, ref)
	if err != nil {
		return Stats{}, fmt.Errorf("transfer: image %q: %w", ref, err)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return Stats{}, fmt.Errorf("transfer: %s exists and is not empty: choose a new path", dir)
	}
	store, err := local.NewStore(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("transfer: open %s: %w", dir, err)
	}
	st, err := CopyBlobs(ctx, ContentProvider(ctx, client), ctx, store, img.Target)
	if err != nil {
		return st, err
	}
	_ = os.RemoveAll(filepath.Join(dir, "ingest"))
	root := img.Target
	root.Annotations = map[string]string{RefAnnotation: ref}
	for k, v := range annotations {
		root.Annotations[k] = v
	}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{root}}
	if err := writeJSONFile(filepath.Join(dir, ocispec.ImageIndexFile), index); err != nil {
		return st, err
	}
	return st, writeJSONFile(filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
}

// ReadDir returns the root descriptor of a layout written by ExportDir and a store over its blobs.
func ReadDir(dir string) (ocispec.Descriptor, content.Store, error) {
	b, err := os.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile))
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("transfer: %s is not a checkpoint directory: %w", dir, err)
	}
	var index ocispec.Index
	if err := json.Unmarshal(b, &index); err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("transfer: parse %s/index.json: %w", dir, err)
	}
	if len(index.Manifests) != 1 {
		return ocispec.Descriptor{}, nil, fmt.Errorf("transfer: %s/index.json lists %d images, want 1", dir, len(index.Manifests))
	}
	s, err := local.NewStore(dir)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return index.Manifests[0], s, nil
}

// ImportDir copies a layout written by ExportDir into client's containerd (verifying every
// blob's digest) and registers its image; it returns the image name.
func ImportDir(ctx context.Context, client *containerd.Client, dir string) (string, Stats, error) {
	root, store, err := ReadDir(dir)
	if err != nil {
		return "", Stats{}, err
	}
	ref := root.Annotations[RefAnnotation]
	if ref == "" {
		return "", Stats{}, fmt.Errorf("transfer: %s/index.json names no image (%s)", dir, RefAnnotation)
	}
	dctx, done, err := client.WithLease(ctx)
	if err != nil {
		return "", Stats{}, err
	}
	defer done(context.WithoutCancel(ctx))
	target := root
	target.Annotations = nil
	st, err := CopyBlobs(ctx, store, dctx, client.ContentStore(), target)
	if err != nil {
		return ref, st, err
	}
	is := client.ImageService()
	rec := images.Image{Name: ref, Target: target}
	_, err = is.Create(dctx, rec)
	if errdefs.IsAlreadyExists(err) {
		_, err = is.Update(dctx, rec)
	}
	if err != nil {
		return ref, st, fmt.Errorf("transfer: register image %s: %w", ref, err)
	}
	return ref, st, nil
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("transfer: write %s: %w", path, err)
	}
	return nil
}
