package transfer

import (
	"context"
	"os"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ContentProvider returns the fastest way to read the content of client's containerd: straight
// from its content store's directory when that is on this machine (containerd's content plugin
// reports its root through the introspection API), else through the API. Reading through the
// API streams every blob over gRPC: about 30 MB/s on the lab machines, against disk speed for
// the directory. Digests are checked by whoever receives the blobs.
func ContentProvider(ctx context.Context, client *containerd.Client) content.Provider {
	remote := client.ContentStore()
	ps, err := client.IntrospectionService().Plugins(ctx, []string{`type=="io.containerd.content.v1",id=="content"`})
	if err != nil || len(ps.Plugins) != 1 {
		return remote
	}
	root := ps.Plugins[0].Exports["root"]
	if root == "" {
		return remote
	}
	if _, err := os.Stat(root); err != nil {
		return remote
	}
	store, err := local.NewStore(root)
	if err != nil {
		return remote
	}
	return fallbackProvider{local: store, remote: remote}
}

// fallbackProvider reads from local, or from remote what local does not have.
type fallbackProvider struct {
	local, remote content.Provider
}

func (f fallbackProvider) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if ra, err := f.local.ReaderAt(ctx, desc); err == nil {
		return ra, nil
	}
	return f.remote.ReaderAt(ctx, desc)
}
