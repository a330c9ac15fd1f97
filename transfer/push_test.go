package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// storeRemote is a Remote over a local content store, as an agent would be.
type storeRemote struct {
	store  content.Store
	tamper func([]byte) []byte // applied to the compressed stream, if set
}

func (r *storeRemote) Missing(ctx context.Context, blobs []ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	for _, d := range blobs {
		if _, err := r.store.Info(ctx, d.Digest); err != nil {
			out = append(out, d)
		}
	}
	return out, nil
}

func (r *storeRemote) Put(ctx context.Context, d ocispec.Descriptor, body io.Reader) (int64, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return 0, err
	}
	if r.tamper != nil {
		b = r.tamper(b)
	}
	return int64(len(b)), Receive(ctx, r.store, d, bytes.NewReader(b))
}

func newStore(t *testing.T) content.Store {
	s, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s content.Store, mediaType string, b []byte) ocispec.Descriptor {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(context.Background(), s, d.Digest.String(), bytes.NewReader(b), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// index writes an OCI index over two blobs (a large compressible one and a small one).
func index(t *testing.T, s content.Store) (root ocispec.Descriptor, big, small ocispec.Descriptor) {
	big = put(t, s, "application/vnd.containerd.container.criu.checkpoint.criu.tar", bytes.Repeat([]byte("twin state "), 1<<18))
	small = put(t, s, "application/octet-stream", []byte("base layer"))
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{big, small}})
	return put(t, s, ocispec.MediaTypeImageIndex, idx), big, small
}

func TestPushSkipsWhatTheTargetHoldsAndCompresses(t *testing.T) {
	ctx := context.Background()
	src, dst := newStore(t), newStore(t)
	root, big, small := index(t, src)
	put(t, dst, small.MediaType, []byte("base layer")) // already on the target
	var progress int64
	st, err := Push(ctx, src, root, &storeRemote{store: dst}, func(done, total int64) { progress = done })
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobsSent != 2 || st.BlobsSkipped != 1 || st.BytesSent != big.Size+root.Size || progress != st.BytesSent {
		t.Errorf("stats %+v, progress %d: want the index and the big blob sent, the small one skipped", st, progress)
	}
	if st.CompressionRatio() < 10 {
		t.Errorf("compression ratio %.1f on repetitive data: want > 10", st.CompressionRatio())
	}
	for _, d := range []ocispec.Descriptor{root, big, small} {
		if _, err := dst.Info(ctx, d.Digest); err != nil {
			t.Errorf("target lacks %s: %v", d.Digest, err)
		}
	}
}

func TestReceiveRejectsACorruptBlob(t *testing.T) {
	ctx := context.Background()
	src, dst := newStore(t), newStore(t)
	root, big, _ := index(t, src)
	_, err := Push(ctx, src, root, &storeRemote{store: dst, tamper: func(b []byte) []byte {
		// Re-encode the blob with one byte changed: a valid stream of the wrong content.
		raw := decompress(t, b)
		if len(raw) > 1000 {
			raw[len(raw)/2] ^= 1
		}
		return compress(t, raw)
	}}, nil)
	if err == nil || !strings.Contains(err.Error(), "unexpected commit digest") {
		t.Fatalf("push of a corrupted blob: %v; want a digest mismatch", err)
	}
	if _, err := dst.Info(ctx, big.Digest); err == nil {
		t.Error("the corrupted blob was committed")
	}
}

type dirRemote struct {
	t      *testing.T
	dir    string
	tamper bool
}

func (d *dirRemote) PutDir(ctx context.Context, r io.Reader) (int64, string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return 0, "", err
	}
	if d.tamper {
		raw := decompress(d.t, b)
		raw[700] ^= 1 // inside the first file's data
		b = compress(d.t, raw)
	}
	got, err := ReceiveDir(bytes.NewReader(b), d.dir, 0)
	return int64(len(b)), got, err
}

func TestPushDir(t *testing.T) {
	src := t.TempDir()
	for name, data := range map[string][]byte{"pages-1.img": bytes.Repeat([]byte{0}, 1<<20), "core-1.img": []byte("core"), "stats-dump": []byte("s")} {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "img")
	st, err := PushDir(context.Background(), src, &dirRemote{t: t, dir: dst})
	if err != nil {
		t.Fatal(err)
	}
	if st.WireBytes == 0 || st.WireBytes*10 > st.Bytes || len(st.Digest) != 64 {
		t.Errorf("stats %+v: want a compressed stream and a digest", st)
	}
	for _, name := range []string{"pages-1.img", "core-1.img", "stats-dump"} {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s did not arrive intact: %v", name, err)
		}
	}
	// A byte changed in flight (under the compression) changes the digest: the push fails.
	if _, err := PushDir(context.Background(), src, &dirRemote{t: t, dir: filepath.Join(t.TempDir(), "img"), tamper: true}); err == nil || !strings.Contains(err.Error(), "arrived with digest") {
		t.Errorf("tampered push: %v; want a digest mismatch", err)
	}
}
