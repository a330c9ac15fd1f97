package fog

import (
	"fmt"
	"html"
	"io"
	"sort"
	"time"
)

var hostColor = map[string]string{"cloud": "#4a7fd4", "fog1": "#3fa34d", "fog2": "#e08a2c"}

// Picture writes an SVG of the run: a row per twin, coloured by the host it ran on over time,
// its latency p99 drawn across the row (the row's height is 0 to the run's highest p99), the
// hosts' CPU below, and the timeline's events as marks on the time axis.
func (r Result) Picture(w io.Writer) error {
	ids := make([]string, 0, len(r.Series))
	for id := range r.Series {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	const left, right, rowH, gap, top = 70, 20, 26, 4, 40
	const W = 1100
	cpuH := 120
	H := top + len(ids)*(rowH+gap) + 40 + cpuH + 60
	span := r.End.Sub(r.Start).Seconds()
	if span <= 0 {
		span = 1
	}
	x := func(t time.Time) float64 { return left + (W-left-right)*t.Sub(r.Start).Seconds()/span }
	maxLat := 1.0
	for _, ps := range r.Series {
		for _, p := range ps {
			maxLat = max(maxLat, p.P99Ms)
		}
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", W, H)
	fmt.Fprintf(w, `<text x="%d" y="18" font-size="14">Twin placement and latency p99 over time (row height: 0–%.0f ms); host CPU below</text>`+"\n", left, maxLat)
	lx := left
	for _, h := range []string{"cloud", "fog1", "fog2"} {
		fmt.Fprintf(w, `<rect x="%d" y="26" width="10" height="10" fill="%s"/><text x="%d" y="35">%s</text>`+"\n", lx, hostColor[h], lx+14, h)
		lx += 70
	}
	for i, id := range ids {
		y := top + i*(rowH+gap)
		fmt.Fprintf(w, `<text x="4" y="%d">%s</text>`+"\n", y+rowH/2+4, html.EscapeString(id))
		ps := r.Series[id]
		for j, p := range ps {
			end := r.End
			if j+1 < len(ps) {
				end = ps[j+1].Time
			}
			fmt.Fprintf(w, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" opacity="0.55"/>`+"\n", x(p.Time), y, max(x(end)-x(p.Time), 0.5), rowH, hostColor[p.Host])
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="#222" stroke-width="1" points="`)
		for _, p := range ps {
			fmt.Fprintf(w, "%.1f,%.1f ", x(p.Time), float64(y+rowH)-float64(rowH)*p.P99Ms/maxLat)
		}
		fmt.Fprintln(w, `"/>`)
	}
	cy := top + len(ids)*(rowH+gap) + 30
	fmt.Fprintf(w, `<text x="4" y="%d">CPU</text><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`+"\n", cy+cpuH/2, left, cy+cpuH, W-right, cy+cpuH)
	maxCPU := 1.0
	for _, ps := range r.Hosts {
		for _, p := range ps {
			maxCPU = max(maxCPU, p.P99Ms)
		}
	}
	for _, h := range []string{"cloud", "fog1", "fog2"} {
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="`, hostColor[h])
		for _, p := range r.Hosts[h] {
			fmt.Fprintf(w, "%.1f,%.1f ", x(p.Time), float64(cy+cpuH)-float64(cpuH)*p.P99Ms/maxCPU)
		}
		fmt.Fprintln(w, `"/>`)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d">0–%.0f%% of a host</text>`+"\n", W-right-110, cy-4, maxCPU*100)
	ay := cy + cpuH + 20
	for s := 0.0; s <= span; s += 30 {
		t := r.Start.Add(time.Duration(s * float64(time.Second)))
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999"/><text x="%.1f" y="%d" text-anchor="middle">%.0fs</text>`+"\n", x(t), ay-6, x(t), ay, x(t), ay+12, s)
	}
	for _, e := range r.Timeline {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c33" stroke-dasharray="2,3" opacity="0.35"><title>%s</title></line>`+"\n",
			x(e.Time), top, x(e.Time), ay-6, html.EscapeString(e.Time.Format("15:04:05.000")+" "+e.What))
	}
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}
