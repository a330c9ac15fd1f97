package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/checkpoint-restore/go-criu/v7/stats"
	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Annotations of a checkpoint image and of its exported directory.
const (
	annotationImage       = "org.opencontainers.image.ref.name"
	annotationRuntime     = "io.containerd.checkpoint.runtime"
	annotationSnapshotter = "io.containerd.checkpoint.snapshotter"
	// AnnotationContainer records the id of the checkpointed container.
	AnnotationContainer = "dev.ftwin-migrate.container"
	// AnnotationBoundary records the application's boundary (JSON, see kafkahooks.Boundary)
	// when it was quiesced for the checkpoint.
	AnnotationBoundary = "dev.ftwin-migrate.boundary"
	// AnnotationCRIUStats records CRIU's dump statistics (JSON), which are not in CRIU's image.
	AnnotationCRIUStats = "dev.ftwin-migrate.criu-dump-statistics"
)

// Info is what a checkpoint holds.
type Info struct {
	Ref         string               `json:"ref"`
	Container   string               `json:"container,omitempty"`
	BaseImage   string               `json:"base_image"`
	Runtime     string               `json:"runtime"`
	Snapshotter string               `json:"snapshotter"`
	Entries     []ocispec.Descriptor `json:"entries"`
	// CRIU is CRIU's dump statistics, if the image holds them.
	CRIU *stats.DumpStatsEntry `json:"criu_dump_statistics,omitempty"`
	// Boundary is the application's boundary at the checkpoint, if it took one.
	Boundary json.RawMessage `json:"boundary,omitempty"`
}

// Inspect describes the checkpoint whose index is root, with its blobs in cs.
func Inspect(ctx context.Context, cs content.Provider, root ocispec.Descriptor) (*Info, error) {
	idx, err := readIndex(ctx, cs, root)
	if err != nil {
		return nil, err
	}
	info := &Info{
		Ref: root.Annotations[ocispec.AnnotationRefName], Container: root.Annotations[AnnotationContainer],
		BaseImage: idx.Annotations[annotationImage], Runtime: idx.Annotations[annotationRuntime],
		Snapshotter: idx.Annotations[annotationSnapshotter], Entries: idx.Manifests,
	}
	if info.BaseImage == "" {
		return nil, fmt.Errorf("checkpoint: %s is not a containerd checkpoint index (no %s annotation)", root.Digest, annotationImage)
	}
	if b := root.Annotations[AnnotationBoundary]; b != "" {
		info.Boundary = json.RawMessage(b)
	}
	if js := root.Annotations[AnnotationCRIUStats]; js != "" {
		var st stats.DumpStatsEntry
		if err := json.Unmarshal([]byte(js), &st); err == nil {
			info.CRIU = &st
		}
	} else {
		info.CRIU, _ = DumpStats(ctx, cs, root, "")
	}
	return info, nil
}

// Annotations returns what ExportDir should record beside the checkpoint's blobs.
func (r *Result) Annotations(container string) map[string]string {
	a := map[string]string{AnnotationContainer: container}
	if r.CRIU != nil {
		if b, err := json.Marshal(r.CRIU); err == nil {
			a[AnnotationCRIUStats] = string(b)
		}
	}
	return a
}

// WriteText prints the checkpoint's description for a person.
func (i *Info) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "checkpoint %s\n  container   %s\n  base image  %s\n  runtime     %s\n  snapshotter %s\n", i.Ref, i.Container, i.BaseImage, i.Runtime, i.Snapshotter)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  MEDIA TYPE\tSIZE\tDIGEST")
	for _, e := range i.Entries {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", strings.TrimPrefix(e.MediaType, "application/"), e.Size, e.Digest)
	}
	tw.Flush()
	if i.Boundary != nil {
		fmt.Fprintf(w, "  boundary: %s\n", i.Boundary)
	} else {
		fmt.Fprintln(w, "  boundary: none (the application was not quiesced)")
	}
	if i.CRIU != nil {
		fmt.Fprintf(w, "  CRIU: freezing_time %dµs frozen_time %dµs memdump_time %dµs memwrite_time %dµs pages_scanned %d pages_written %d\n",
			i.CRIU.GetFreezingTime(), i.CRIU.GetFrozenTime(), i.CRIU.GetMemdumpTime(), i.CRIU.GetMemwriteTime(), i.CRIU.GetPagesScanned(), i.CRIU.GetPagesWritten())
	}
	return nil
}
