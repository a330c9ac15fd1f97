package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// WriteMarkdown writes the results as a Markdown table, each method's stream gap beside its
// ratio to the floor measured in the same run.
func (r *Results) WriteMarkdown(w io.Writer) error {
	fmt.Fprintf(w, "Measured %s on %s. Stream gap: longest pause in the twin's committed output around the move; ×floor: over CRIU dump+restore on one host plus the CRIU image at the link's measured bandwidth", r.Started.Format("2006-01-02 15:04 MST"), r.Host)
	var bws []string
	for _, link := range sortedKeys(r.BandwidthMBps) {
		bws = append(bws, fmt.Sprintf("%s %.0f MB/s", linkName(link), r.BandwidthMBps[link]))
	}
	fmt.Fprintf(w, " (%s).\n\n", strings.Join(bws, ", "))
	fmt.Fprintln(w, "| state | link | method | stream gap ms | ×floor | downtime ms | CRIU frozen ms | total ms | wire MiB | CPU s | lost | dup | rebalances |")
	fmt.Fprintln(w, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, x := range r.Runs {
		ratio := "–"
		if x.FloorRatio > 0 {
			ratio = fmt.Sprintf("%.2f", x.FloorRatio)
		}
		if x.Method == "criu-floor" && x.FloorEstimateMs > 0 {
			ratio = fmt.Sprintf("(%.0f ms)", x.FloorEstimateMs)
		}
		fmt.Fprintf(w, "| %d MiB | %s | %s | %.0f | %s | %.0f | %.0f | %.0f | %.1f | %.2f | %d | %d | %d |", x.StateMiB, linkName(x.LinkMbit), x.Method,
			x.StreamGapMs, ratio, x.DowntimeMs, x.FrozenMs, x.TotalMs, float64(x.WireBytes)/(1<<20), x.CPUSeconds, x.Lost, x.Duplicated, x.Rebalances)
		if x.Error != "" {
			fmt.Fprintf(w, " error: %s", strings.ReplaceAll(x.Error, "|", "/"))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func sortedKeys(m map[int]float64) []int {
	var k []int
	for x := range m {
		k = append(k, x)
	}
	sort.Ints(k)
	return k
}

// WriteSVG plots stream gap against state size, log-log, one line per method and link.
func (r *Results) WriteSVG(w io.Writer) error {
	const W, H, left, right, top, bottom = 780, 440, 90, 210, 30, 50
	type key struct {
		method string
		link   int
	}
	series := map[key][][2]float64{}
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, x := range r.Runs {
		if x.StreamGapMs <= 0 || x.Error != "" {
			continue
		}
		k := key{x.Method, x.LinkMbit}
		series[k] = append(series[k], [2]float64{float64(x.StateMiB), x.StreamGapMs})
		minX, maxX = math.Min(minX, float64(x.StateMiB)), math.Max(maxX, float64(x.StateMiB))
		minY, maxY = math.Min(minY, x.StreamGapMs), math.Max(maxY, x.StreamGapMs)
	}
	if len(series) == 0 {
		minX, maxX, minY, maxY = 16, 512, 100, 10000
	}
	lx0, lx1 := math.Log10(minX)-0.1, math.Log10(maxX)+0.1
	ly0, ly1 := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
	if ly1 <= ly0 {
		ly1 = ly0 + 1
	}
	px := func(v float64) float64 { return left + (math.Log10(v)-lx0)/(lx1-lx0)*(W-left-right) }
	py := func(v float64) float64 { return H - bottom - (math.Log10(v)-ly0)/(ly1-ly0)*(H-top-bottom) }

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="%d" y="18" font-size="14">Stream gap during a twin migration (log-log)</text>`+"\n", left)
	for e := ly0; e <= ly1; e++ {
		y := py(math.Pow(10, e))
		fmt.Fprintf(w, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g ms</text>`+"\n", left, W-right, y, y, left-6, y+4, math.Pow(10, e))
	}
	var sizes []float64
	seen := map[float64]bool{}
	for _, s := range series {
		for _, p := range s {
			if !seen[p[0]] {
				seen[p[0]] = true
				sizes = append(sizes, p[0])
			}
		}
	}
	sort.Float64s(sizes)
	for _, s := range sizes {
		x := px(s)
		fmt.Fprintf(w, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%g MiB</text>`+"\n", x, x, top, H-bottom, x, H-bottom+16, s)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">twin state size</text>`+"\n", (left+W-right)/2, H-10)
	colors := map[string]string{"ftwin-migrate": "#1f77b4", "containerd": "#ff7f0e", "kafka-restart": "#2ca02c", "criu-floor": "#7f7f7f"}
	var keys []key
	for k := range series {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].method != keys[j].method {
			return keys[i].method < keys[j].method
		}
		return keys[i].link < keys[j].link
	})
	for i, k := range keys {
		pts := series[k]
		sort.Slice(pts, func(a, b int) bool { return pts[a][0] < pts[b][0] })
		var path []string
		for _, p := range pts {
			path = append(path, fmt.Sprintf("%.1f,%.1f", px(p[0]), py(p[1])))
		}
		dash := ""
		if k.link != 0 {
			dash = ` stroke-dasharray="6,4"`
		}
		c := colors[k.method]
		if c == "" {
			c = "black"
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", c, dash, strings.Join(path, " "))
		for _, p := range pts {
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p[0]), py(p[1]), c)
		}
		ly := top + 10 + i*18
		fmt.Fprintf(w, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/><text x="%d" y="%d">%s, %s</text>`+"\n",
			W-right+10, W-right+40, ly, ly, c, dash, W-right+46, ly+4, k.method, linkName(k.link))
	}
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}
