// Package ociimage builds single-layer OCI images — around a static binary, or from a root
// filesystem directory — and imports them into a containerd or writes them as an image archive,
// with no registry and no Docker involved. It also imports image archives (OCI layouts or
// `docker save` tars) made elsewhere.
//
// The images are deterministic: the same files and options give the same layer, config and
// manifest digests on every host, so a migration that copies content between containerds can
// skip blobs the target already holds.
package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultSnapshotter is the snapshotter Build unpacks into. Containers must use the same one.
const DefaultSnapshotter = "overlayfs"

// defaultPath is the PATH of the image's environment.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Opt configures Build, BuildDir and WriteArchive.
type Opt func(*options)

type options struct {
	entrypoint []string
	cmd        []string
	env        []string
	workingDir string
	labels     map[string]string
}

// WithEntrypoint sets the image's entrypoint (Build's default: /bin/<binary name>; BuildDir's
// and WriteArchive's default: none, so Cmd or the container's arguments name the program).
// With no arguments the default is kept.
func WithEntrypoint(args ...string) Opt {
	return func(o *options) { o.entrypoint = append([]string(nil), args...) }
}

// WithCmd sets the image's Cmd: the default arguments after the entrypoint, which a container's
// own arguments replace (as `nerdctl run IMAGE ARGS...` does). Default: none.
func WithCmd(args ...string) Opt {
	return func(o *options) { o.cmd = append([]string(nil), args...) }
}

// WithEnv adds KEY=VALUE entries to the image's environment, after PATH (an entry for PATH
// replaces the default one). Later entries for the same key replace earlier ones.
func WithEnv(env ...string) Opt {
	return func(o *options) { o.env = append(o.env, env...) }
}

// WithWorkingDir sets the image's working directory (default "/").
func WithWorkingDir(dir string) Opt {
	return func(o *options) { o.workingDir = dir }
}

// WithLabels adds labels to the image record in containerd's image store
// (not to the OCI config, so they do not change any digest). The image
// record's labels are replaced by the labels given to Build. WriteArchive
// ignores them (an archive has no image record).
func WithLabels(labels map[string]string) Opt {
	return func(o *options) {
		if o.labels == nil {
			o.labels = map[string]string{}
		}
		maps.Copy(o.labels, labels)
	}
}

func newOptions(opts []Opt) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// imageEnv returns the image's environment: the default PATH, then o.env, one entry per key (the
// last one given wins, in the place of the first).
func (o options) imageEnv() []string {
	var env []string
	index := map[string]int{}
	for _, kv := range append([]string{defaultPath}, o.env...) {
		key := kv
		if i := strings.IndexByte(kv, '='); i >= 0 {
			key = kv[:i]
		}
		if i, ok := index[key]; ok {
			env[i] = kv
			continue
		}
		index[key] = len(env)
		env = append(env, kv)
	}
	return env
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
	o := newOptions(opts)
	if len(o.entrypoint) == 0 {
		o.entrypoint = []string{"/bin/" + name}
	}
	return build(ctx, client, ref, func(w io.Writer) error { return LayerTar(w, binaryPath, name) }, o)
}

// BuildDir is Build for a root filesystem: the image's one layer holds the tree under rootfs
// (see DirLayerTar) — a program with its shared libraries, a jlink'd JRE and an application, a
// distribution's root. Its entrypoint and Cmd are what WithEntrypoint and WithCmd say (none by
// default).
func BuildDir(ctx context.Context, client *containerd.Client, ref, rootfs string, opts ...Opt) (containerd.Image, error) {
	if err := checkDir(rootfs); err != nil {
		return nil, fmt.Errorf("build image %s: %w", ref, err)
	}
	return build(ctx, client, ref, func(w io.Writer) error { return DirLayerTar(w, rootfs) }, newOptions(opts))
}

func build(ctx context.Context, client *containerd.Client, ref string, layer func(io.Writer) error, o options) (containerd.Image, error) {
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("build image %s: create lease: %w", ref, err)
	}
	defer done(context.WithoutCancel(ctx))

	blobs, err := writeBlobs(ctx, storeSink{client.ContentStore()}, layer, o)
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", ref, err)
	}
	rec, err := register(ctx, client.ImageService(), images.Image{Name: ref, Target: blobs.manifest, Labels: o.labels})
	if err != nil {
		return nil, fmt.Errorf("build image %s: register: %w", ref, err)
	}
	img := containerd.NewImage(client, rec)
	if err := img.Unpack(ctx, DefaultSnapshotter); err != nil {
		return nil, fmt.Errorf("build image %s: unpack into %s: %w", ref, DefaultSnapshotter, err)
	}
	return img, nil
}

// WriteArchive writes an image archive of a single-layer image named ref holding the tree under
// rootfs (see BuildDir) to w: an OCI image layout in a tar (oci-layout, index.json naming ref,
// the blobs), with Docker's manifest.json beside it, as `ctr images export` writes. `ctr images
// import`, `nerdctl load`, `docker load`, ImportArchive and `ftwin-migrate lab run
// --image-archive` read it. The archive is deterministic, as the image is.
func WriteArchive(ctx context.Context, w io.Writer, ref, rootfs string, opts ...Opt) error {
	if err := checkDir(rootfs); err != nil {
		return fmt.Errorf("write image archive %s: %w", ref, err)
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("write image archive: image name %q: %w", ref, err)
	}
	tw := tar.NewWriter(w)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return fmt.Errorf("write image archive %s: %w", ref, err)
		}
	}
	blobs, err := writeBlobs(ctx, tarSink{tw}, func(w io.Writer) error { return DirLayerTar(w, rootfs) }, newOptions(opts))
	if err != nil {
		return fmt.Errorf("write image archive %s: %w", ref, err)
	}
	manifest := blobs.manifest
	manifest.Annotations = map[string]string{images.AnnotationImageName: ref}
	if tagged, ok := named.(reference.Tagged); ok {
		manifest.Annotations[ocispec.AnnotationRefName] = tagged.Tag()
	}
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{manifest}}
	docker := []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{{Config: blobPath(blobs.config), RepoTags: []string{reference.FamiliarString(named)}, Layers: []string{blobPath(blobs.layer)}}}
	for _, f := range []struct {
		name string
		v    any
	}{{ocispec.ImageLayoutFile, ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}}, {"index.json", index}, {"manifest.json", docker}} {
		data, err := json.Marshal(f.v)
		if err != nil {
			return fmt.Errorf("write image archive %s: encode %s: %w", ref, f.name, err)
		}
		if err := writeTarFile(tw, f.name, 0o644, bytes.NewReader(data), int64(len(data))); err != nil {
			return fmt.Errorf("write image archive %s: %w", ref, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write image archive %s: %w", ref, err)
	}
	return nil
}

func blobPath(d ocispec.Descriptor) string {
	return "blobs/" + d.Digest.Algorithm().String() + "/" + d.Digest.Encoded()
}

func writeTarFile(tw *tar.Writer, name string, mode int64, r io.Reader, size int64) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size, ModTime: epoch}); err != nil {
		return fmt.Errorf("write tar entry %s: %w", name, err)
	}
	if _, err := io.Copy(tw, r); err != nil {
		return fmt.Errorf("write tar entry %s: %w", name, err)
	}
	return nil
}

// blobSink takes the image's blobs: a containerd content store (storeSink) or an archive (tarSink).
type blobSink interface {
	writeBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader, gcRefs map[string]string) error
}

type storeSink struct{ cs content.Ingester }

func (s storeSink) writeBlob(ctx context.Context, desc ocispec.Descriptor, r io.Reader, gcRefs map[string]string) error {
	return content.WriteBlob(ctx, s.cs, "ftwin-ociimage-"+desc.Digest.String(), r, desc, content.WithLabels(gcRefs))
}

type tarSink struct{ tw *tar.Writer }

func (s tarSink) writeBlob(_ context.Context, desc ocispec.Descriptor, r io.Reader, _ map[string]string) error {
	return writeTarFile(s.tw, blobPath(desc), 0o444, r, desc.Size)
}

func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("root filesystem %s is not a directory", dir)
	}
	return nil
}

// imageBlobs are the descriptors of an image's blobs.
type imageBlobs struct{ layer, config, manifest ocispec.Descriptor }

// writeBlobs writes the layer, the config and the manifest, children first,
// and returns their descriptors. A content store skips blobs already present.
func writeBlobs(ctx context.Context, sink blobSink, layer func(io.Writer) error, o options) (imageBlobs, error) {
	layerDesc, err := writeLayer(ctx, sink, layer)
	if err != nil {
		return imageBlobs{}, err
	}
	workingDir := o.workingDir
	if workingDir == "" {
		workingDir = "/"
	}
	config, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config: ocispec.ImageConfig{
			Entrypoint: o.entrypoint,
			Cmd:        o.cmd,
			Env:        o.imageEnv(),
			WorkingDir: workingDir,
		},
		// The layer is uncompressed, so its diff ID is its digest.
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	if err != nil {
		return imageBlobs{}, fmt.Errorf("encode config: %w", err)
	}
	configDesc, err := writeBlob(ctx, sink, ocispec.MediaTypeImageConfig, config, nil)
	if err != nil {
		return imageBlobs{}, fmt.Errorf("write config: %w", err)
	}

	manifest, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return imageBlobs{}, fmt.Errorf("encode manifest: %w", err)
	}
	// These labels make the manifest keep its config and layer alive in the
	// garbage collector once the image record references the manifest.
	gcRefs := map[string]string{
		"containerd.io/gc.ref.content.config": configDesc.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    layerDesc.Digest.String(),
	}
	manifestDesc, err := writeBlob(ctx, sink, ocispec.MediaTypeImageManifest, manifest, gcRefs)
	if err != nil {
		return imageBlobs{}, fmt.Errorf("write manifest: %w", err)
	}
	return imageBlobs{layer: layerDesc, config: configDesc, manifest: manifestDesc}, nil
}

// writeLayer writes the layer to a temporary file (a root filesystem can be large), digesting
// it on the way, and then to sink.
func writeLayer(ctx context.Context, sink blobSink, layer func(io.Writer) error) (ocispec.Descriptor, error) {
	f, err := os.CreateTemp("", "ftwin-layer-")
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("make layer: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	digester := digest.Canonical.Digester()
	counter := &countingWriter{}
	if err := layer(io.MultiWriter(f, digester.Hash(), counter)); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("make layer: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("make layer: %w", err)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digester.Digest(), Size: counter.n}
	if err := sink.writeBlob(ctx, desc, f, nil); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write layer: %w", err)
	}
	return desc, nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func writeBlob(ctx context.Context, sink blobSink, mediaType string, data []byte, gcRefs map[string]string) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := sink.writeBlob(ctx, desc, bytes.NewReader(data), gcRefs); err != nil {
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
