package ociimage

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
)

// ImportArchive imports the image archive at path — an OCI image layout in a tar (`ctr images
// export`, `nerdctl save`, `skopeo copy ... oci-archive:`, WriteArchive) or a `docker save` tar —
// into client's containerd (its namespace, or the one on ctx), for the client's platform, and
// unpacks the image it returns into DefaultSnapshotter.
//
// It returns the image named ref, compared as Docker does ("kcat" is
// "docker.io/library/kcat:latest"), or with ref empty the archive's only image. The archive's
// images are registered under the names it gives them (a bare tag such as "latest", as OCI
// layouts may carry, becomes "import.local/BASE:latest", BASE the archive's file name without
// extension; an unnamed image "import.local/BASE@sha256:..."), replacing images of the same name.
// Importing the same archive again writes no new blob.
func ImportArchive(ctx context.Context, client *containerd.Client, path, ref string) (containerd.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w", err)
	}
	defer f.Close()
	img, err := importImage(ctx, client, f, archiveBase(path), ref)
	if err != nil {
		return nil, fmt.Errorf("import image archive %s: %w", path, err)
	}
	return img, nil
}

// Copy copies the image ref (for the client's platform) from one containerd to another, as
// `ctr images export` piped into `ctr images import` would, and unpacks it there into
// DefaultSnapshotter. Both work in their client's namespace or the one on ctx.
func Copy(ctx context.Context, from, to *containerd.Client, ref string) (containerd.Image, error) {
	src, err := from.GetImage(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("copy image %s: %w", ref, err)
	}
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		err := from.Export(ctx, pw, archive.WithImage(from.ImageService(), src.Name()), archive.WithPlatform(platforms.DefaultStrict()))
		pw.CloseWithError(err)
		exported <- err
	}()
	img, err := importImage(ctx, to, pr, "import.local/copy", src.Name())
	pr.CloseWithError(io.ErrClosedPipe) // unblocks the exporter if the import stopped early
	if xerr := <-exported; xerr != nil && err == nil {
		err = fmt.Errorf("export: %w", xerr)
	}
	if err != nil {
		return nil, fmt.Errorf("copy image %s: %w", ref, err)
	}
	return img, nil
}

// importImage imports the archive read from r, names unnamed images and bare tags after base,
// picks the image ref names (or the only one) and unpacks it.
func importImage(ctx context.Context, client *containerd.Client, r io.Reader, base, ref string) (containerd.Image, error) {
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("create lease: %w", err)
	}
	defer done(context.WithoutCancel(ctx))

	imgs, err := client.Import(ctx, r,
		containerd.WithImageRefTranslator(archive.AddRefPrefix(base)),
		containerd.WithDigestRef(archive.DigestTranslator(base)),
		containerd.WithSkipDigestRef(func(name string) bool { return name != "" }))
	if err != nil {
		return nil, fmt.Errorf("read it (want an OCI image layout or `docker save` tar): %w", err)
	}
	rec, err := pickImage(imgs, ref)
	if err != nil {
		return nil, err
	}
	img := containerd.NewImage(client, rec)
	if err := img.Unpack(ctx, DefaultSnapshotter); err != nil {
		return nil, fmt.Errorf("unpack %s into %s (is it an image for %s?): %w", rec.Name, DefaultSnapshotter, platforms.DefaultString(), err)
	}
	return img, nil
}

var unsafeName = regexp.MustCompile(`[^a-z0-9._-]+`)

// archiveBase is the repository name an unnamed image of the archive at path gets.
func archiveBase(path string) string {
	name := strings.ToLower(filepath.Base(path))
	for _, ext := range []string{".tar.gz", ".tgz", ".tar", ".oci"} {
		name = strings.TrimSuffix(name, ext)
	}
	name = strings.Trim(unsafeName.ReplaceAllString(name, "-"), "-._")
	if name == "" {
		name = "image"
	}
	return "import.local/" + name
}

// pickImage returns the image of imgs that ref names, or the only one if ref is empty.
func pickImage(imgs []images.Image, ref string) (images.Image, error) {
	var names []string
	for _, img := range imgs {
		names = append(names, img.Name)
	}
	slices.Sort(names)
	if ref == "" {
		if len(imgs) == 1 {
			return imgs[0], nil
		}
		if len(imgs) == 0 {
			return images.Image{}, fmt.Errorf("it holds no image")
		}
		return images.Image{}, fmt.Errorf("it holds %d images (%s): name the one to run", len(imgs), strings.Join(names, ", "))
	}
	want := NormalizeRef(ref)
	for _, img := range imgs {
		if img.Name == ref || NormalizeRef(img.Name) == want {
			return img, nil
		}
	}
	return images.Image{}, fmt.Errorf("it holds no image %s (it holds: %s)", ref, strings.Join(names, ", "))
}

// NormalizeRef returns ref as containerd stores a pulled or loaded image's name:
// "kcat" → "docker.io/library/kcat:latest". A ref that does not parse is returned as it is.
func NormalizeRef(ref string) string {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ref
	}
	return named.String()
}
