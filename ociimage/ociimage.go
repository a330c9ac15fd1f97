// Package ociimage builds a single-layer OCI image around a static binary and
// imports it into a containerd, with no registry and no Docker involved.
//
// The image is deterministic: the same binary and options give the same
// layer, config and manifest digests on every host, so a migration that copies
// content between containerds can skip blobs the target already holds.
package ociimage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"runtime"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultSnapshotter is the snapshotter Build unpacks into unless
// WithSnapshotter says otherwise. Containers must use the same one.
const DefaultSnapshotter = "overlayfs"

// defaultPath is the PATH of the image's environment.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Opt configures Build.
type Opt func(*options)

type options struct {
	entrypoint  []string
	snapshotter string
	labels      map[string]string
}

// WithEntrypoint sets the image's entrypoint (default: /bin/<binary name>).
// With no arguments the default is kept.
func WithEntrypoint(args ...string) Opt {
	return func(o *options) { o.entrypoint = append([]string(nil), args...) }
}

// WithSnapshotter sets the snapshotter the image is unpacked into (default
// DefaultSnapshotter).
func WithSnapshotter(name string) Opt {
	return func(o *options) { o.snapshotter = name }
}

// WithLabels adds labels to the image record in containerd's image store
// (not to the OCI config, so they do not change any digest). The image
// record's labels are replaced by the labels given to Build.
func WithLabels(labels map[string]string) Opt {
	return func(o *options) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		maps.Copy(o.labels, labels)
	}
}

// Build writes a single-layer image holding the file at binaryPath as
// /bin/<basename> (see LayerTar) into client's content store, registers it in
// the image store as ref (creating or updating the record), and unpacks it
// into the snapshotter. It works in the client's namespace or the one on ctx,
// under a lease so that the garbage collector cannot take the blobs before the
// image references them.
//
// Building again with the same binary, ref and options writes nothing new
// and returns the existing image.
func Build(ctx context.Context, client *containerd.Client, ref, binaryPath string, opts ...Opt) (containerd.Image, error) {
	name := filepath.Base(binaryPath)
	o := options{snapshotter: DefaultSnapshotter}
	for _, opt := range opts {
		opt(&o)
	}
	if len(o.entrypoint) == 0 {
		o.entrypoint = []string{"/bin/" + name}
	}

	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("build image %s: create lease: %w", ref, err)
	}
	defer done(context.WithoutCancel(ctx))

	target, err := writeBlobs(ctx, client.ContentStore(), binaryPath, name, o.entrypoint)
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", ref, err)
	}
	rec, err := register(ctx, client.ImageService(), images.Image{Name: ref, Target: target, Labels: o.labels})
	if err != nil {
		return nil, fmt.Errorf("build image %s: register: %w", ref, err)
	}
	img := containerd.NewImage(client, rec)
	if err := img.Unpack(ctx, o.snapshotter); err != nil {
		return nil, fmt.Errorf("build image %s: unpack into %s: %w", ref, o.snapshotter, err)
	}
	return img, nil
}

// writeBlobs writes the layer, the config and the manifest, children first,
// and returns the manifest's descriptor. Blobs already present are skipped.
func writeBlobs(ctx context.Context, cs content.Store, binaryPath, name string, entrypoint []string) (ocispec.Descriptor, error) {
	var layer bytes.Buffer
	if err := LayerTar(&layer, binaryPath, name); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("make layer: %w", err)
	}
	layerDesc, err := writeBlob(ctx, cs, ocispec.MediaTypeImageLayer, layer.Bytes(), nil)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write layer: %w", err)
	}

	config, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config: ocispec.ImageConfig{
			Entrypoint: entrypoint,
			Env:        []string{defaultPath},
			WorkingDir: "/",
		},
		// The layer is uncompressed, so its diff ID is its digest.
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode config: %w", err)
	}
	configDesc, err := writeBlob(ctx, cs, ocispec.MediaTypeImageConfig, config, nil)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write config: %w", err)
	}

	manifest, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode manifest: %w", err)
	}
	// These labels make the manifest keep its config and layer alive in the
	// garbage collector once the image record references the manifest.
	gcRefs := map[string]string{
		"containerd.io/gc.ref.content.config": configDesc.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    layerDesc.Digest.String(),
	}
	manifestDesc, err := writeBlob(ctx, cs, ocispec.MediaTypeImageManifest, manifest, gcRefs)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write manifest: %w", err)
	}
	return manifestDesc, nil
}

func writeBlob(ctx context.Context, cs content.Ingester, mediaType string, data []byte, labels map[string]string) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	ingestRef := "ftwin-ociimage-" + desc.Digest.String()
	if err := content.WriteBlob(ctx, cs, ingestRef, bytes.NewReader(data), desc, content.WithLabels(labels)); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

// register creates the image record, or updates it if ref already names a
// different target or labels.
func register(ctx context.Context, is images.Store, img images.Image) (images.Image, error) {
	created, err := is.Create(ctx, img)
	if err == nil || !errdefs.IsAlreadyExists(err) {
		return created, err
	}
	existing, err := is.Get(ctx, img.Name)
	if err != nil {
		return images.Image{}, err
	}
	if existing.Target.Digest == img.Target.Digest && maps.Equal(existing.Labels, img.Labels) {
		return existing, nil
	}
	return is.Update(ctx, img, "target", "labels")
}
