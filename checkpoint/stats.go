package checkpoint

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DumpStats reads CRIU's dump statistics (stats-dump) from CRIU's work directory workDir
// if it has them, or else from the CRIU image in the checkpoint index held by cs.
func DumpStats(ctx context.Context, cs content.Provider, index ocispec.Descriptor, workDir string) (*stats.DumpStatsEntry, error) {
	if f, err := os.Open(workDir); workDir != "" && err == nil {
		defer f.Close()
		if st, err := stats.CriuGetDumpStats(f); err == nil {
			return st, nil
		}
	}
	idx, err := readIndex(ctx, cs, index)
	if err != nil {
		return nil, err
	}
	d, err := containerd.GetIndexByMediaType(idx, images.MediaTypeContainerd1Checkpoint)
	if err != nil {
		return nil, fmt.Errorf("no CRIU image in the checkpoint: %w", err)
	}
	ra, err := cs.ReaderAt(ctx, *d)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	tr := tar.NewReader(content.NewReader(ra))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("stats-dump not in the CRIU image")
		} else if err != nil {
			return nil, err
		}
		if filepath.Base(h.Name) != stats.StatsDump {
			continue
		}
		dir, err := os.MkdirTemp("", "ftwin-stats-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, stats.StatsDump), b, 0o600); err != nil {
			return nil, err
		}
		f, err := os.Open(dir)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return stats.CriuGetDumpStats(f)
	}
}

func readIndex(ctx context.Context, cs content.Provider, d ocispec.Descriptor) (*ocispec.Index, error) {
	b, err := content.ReadBlob(ctx, cs, d)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read index %s: %w", d.Digest, err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("checkpoint: parse index %s: %w", d.Digest, err)
	}
	return &idx, nil
}
