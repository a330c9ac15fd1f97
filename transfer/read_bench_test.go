package transfer

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ftwin-migrate/ftwin-migrate/ctrd"
)

// BenchmarkContentRead compares, in one run, reading a 64 MiB blob of a containerd through its
// API with reading it through ContentProvider (the content store's directory):
//
//	go test -run '^$' -bench ContentRead ./transfer
func BenchmarkContentRead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		b.Skip("containerd not installed (run `make install`)")
	}
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	d, err := ctrd.Start(ctx, ctrd.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Stop(ctx)
	c, err := containerd.New(d.Address())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("twin state "), (64<<20)/11)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data)), MediaType: "application/octet-stream"}
	lctx, done, err := c.WithLease(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer done(ctx)
	// A reader without WriteTo, so the blob is sent in chunks.
	if err := content.WriteBlob(lctx, c.ContentStore(), "bench", struct{ io.Reader }{bytes.NewReader(data)}, desc); err != nil {
		b.Fatal(err)
	}
	for _, p := range []struct {
		name string
		src  content.Provider
	}{{"api", c.ContentStore()}, {"directory", ContentProvider(ctx, c)}} {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(desc.Size)
			for i := 0; i < b.N; i++ {
				ra, err := p.src.ReaderAt(ctx, desc)
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, content.NewReader(ra)); err != nil || n != desc.Size {
					b.Fatalf("read %d of %d bytes: %v", n, desc.Size, err)
				}
				ra.Close()
			}
		})
	}
}
