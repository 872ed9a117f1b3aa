package main

import (
	"fmt"
	"html"
	"math"
	"strings"
	"time"
)

// Plot is one SVG file under docs/bench/.
type Plot struct {
	File  string // base name, e.g. "added-latency.svg"
	Title string
	SVG   []byte
}

type pt struct{ X, Y float64 }

type series struct {
	Name   string
	Color  string
	Pts    []pt
	Marker bool
	Right  bool // drawn against the right axis
}

type tick struct {
	V     float64
	Label string
}

// chart is a line chart with labelled axes, drawn with the standard
// library only.
type chart struct {
	Title, XLabel, YLabel, Y2Label string
	XMin, XMax, YMin, YMax         float64
	Y2Max                          float64
	XTicks                         []tick
	Series                         []series
}

const (
	svgW, svgH                 = 760, 420
	padL, padR, padT, padB     = 70, 70, 40, 60
	plotW                      = svgW - padL - padR
	plotH                      = svgH - padT - padB
	colService, colDirect, col = "#1f77b4", "#ff7f0e", "#2ca02c"
)

func (c *chart) sx(x float64) float64 {
	return padL + (x-c.XMin)/(c.XMax-c.XMin)*plotW
}

func (c *chart) sy(y float64) float64 {
	return padT + plotH - (y-c.YMin)/(c.YMax-c.YMin)*plotH
}

// niceTicks returns about n round tick values from 0 to at least max.
func niceTicks(maxV float64, n int) ([]float64, float64) {
	if maxV <= 0 || math.IsNaN(maxV) {
		maxV = 1
	}
	raw := maxV / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	top := math.Ceil(maxV/step) * step
	for v := 0.0; v <= top+step/2; v += step {
		out = append(out, v)
	}
	return out, top
}

func fmtTick(v float64) string {
	switch {
	case v == math.Trunc(v) || math.Abs(v) >= 10:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func (c *chart) render() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="22" text-anchor="middle" font-size="14" font-weight="bold">%s</text>`+"\n", svgW/2, html.EscapeString(c.Title))
	yt, top := niceTicks(c.YMax, 6)
	c.YMax = top
	for _, v := range yt {
		y := c.sy(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padL, y, padL+plotW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y+4, fmtTick(v))
	}
	if c.Y2Max > 0 {
		y2t, top2 := niceTicks(c.Y2Max, 6)
		c.Y2Max = top2
		for _, v := range y2t {
			y := c.sy(v / c.Y2Max * c.YMax)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="start" fill="%s">%s</text>`+"\n", padL+plotW+6, y+4, colDirect, fmtTick(v))
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" transform="rotate(90 %d %d)" fill="%s">%s</text>`+"\n", svgW-18, padT+plotH/2, svgW-18, padT+plotH/2, colDirect, html.EscapeString(c.Y2Label))
	}
	for _, t := range c.XTicks {
		x := c.sx(t.V)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x, padT, x, padT+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, padT+plotH+18, html.EscapeString(t.Label))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", padL, padT, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, svgH-18, html.EscapeString(c.XLabel))
	fmt.Fprintf(&b, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">%s</text>`+"\n", padT+plotH/2, padT+plotH/2, html.EscapeString(c.YLabel))
	for i, s := range c.Series {
		var path strings.Builder
		for j, p := range s.Pts {
			y := p.Y
			if s.Right && c.Y2Max > 0 {
				y = y / c.Y2Max * c.YMax
			}
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f %.1f ", cmd, c.sx(p.X), c.sy(y))
			if s.Marker {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", c.sx(p.X), c.sy(y), s.Color)
			}
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.TrimSpace(path.String()), s.Color)
		ly := padT + 16 + i*18
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", padL+12, ly-4, padL+36, ly-4, s.Color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", padL+42, ly, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// latencyPlot draws latency against percentile on a "nines" axis (0, 90,
// 99, 99.9, 99.99 %), one line per measurement.
func latencyPlot(name, title string, ms []*measurement) Plot {
	c := &chart{Title: title, XLabel: "percentile", YLabel: "latency (ms)"}
	maxX := 0.0
	for i, m := range ms {
		if len(m.Lat) == 0 {
			continue
		}
		limit := -math.Log10(1 / float64(len(m.Lat))) // the last percentile with a sample behind it
		s := series{Name: m.Label, Color: []string{colService, colDirect, col}[i%3]}
		for k := 0; ; k++ {
			x := float64(k) / 50
			if x > limit || x > 4 {
				break
			}
			q := 1 - math.Pow(10, -x)
			y := float64(m.Pct(q)) / float64(time.Millisecond)
			s.Pts = append(s.Pts, pt{x, y})
			c.YMax = max(c.YMax, y)
			maxX = max(maxX, x)
		}
		s.Pts = append(s.Pts, pt{min(limit, 4), float64(m.Max()) / float64(time.Millisecond)})
		c.YMax = max(c.YMax, float64(m.Max())/float64(time.Millisecond))
		c.Series = append(c.Series, s)
	}
	c.XMax = max(math.Ceil(maxX), 1)
	for i, l := range []string{"p0", "p90", "p99", "p99.9", "p99.99"} {
		if float64(i) <= c.XMax {
			c.XTicks = append(c.XTicks, tick{float64(i), l})
		}
	}
	c.YMax *= 1.05
	return Plot{File: name + ".svg", Title: title, SVG: c.render()}
}

type sweepPoint struct {
	C               int
	Service, Direct float64
}

// sweepPlot draws throughput against concurrency (log2 axis).
func sweepPlot(name, title string, pts []sweepPoint) Plot {
	c := &chart{Title: title, XLabel: "concurrency (closed-loop workers, log scale)", YLabel: "successful requests per second"}
	s := series{Name: "service", Color: colService, Marker: true}
	d := series{Name: "direct (emulator)", Color: colDirect, Marker: true}
	c.XMin, c.XMax = math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		x := math.Log2(float64(p.C))
		s.Pts = append(s.Pts, pt{x, p.Service})
		d.Pts = append(d.Pts, pt{x, p.Direct})
		c.YMax = max(c.YMax, p.Service, p.Direct)
		c.XMin, c.XMax = min(c.XMin, x), max(c.XMax, x)
		c.XTicks = append(c.XTicks, tick{x, fmt.Sprint(p.C)})
	}
	if len(pts) == 0 || c.XMax == c.XMin {
		c.XMin, c.XMax = c.XMin-1, c.XMax+1
	}
	c.YMax *= 1.05
	c.Series = []series{s, d}
	return Plot{File: name + ".svg", Title: title, SVG: c.render()}
}

// rssPlot draws the first replica's RSS (left axis) and requests in flight
// (right axis) over the window.
func rssPlot(name, title string, pts []rssPoint) Plot {
	c := &chart{Title: title, XLabel: "time since the window started (s)", YLabel: "RSS (MB)", Y2Label: "requests in flight at the service"}
	r := series{Name: "RSS (MB)", Color: colService}
	g := series{Name: "requests in flight (right axis)", Color: colDirect, Right: true}
	for _, p := range pts {
		x := p.T.Seconds()
		r.Pts = append(r.Pts, pt{x, float64(p.RSS) / (1 << 20)})
		if p.Scraped {
			g.Pts = append(g.Pts, pt{x, p.InFlight})
		}
		c.XMax = max(c.XMax, x)
		c.YMax = max(c.YMax, float64(p.RSS)/(1<<20))
		c.Y2Max = max(c.Y2Max, p.InFlight)
	}
	c.XMax = max(math.Ceil(c.XMax), 1)
	xt, top := niceTicks(c.XMax, 8)
	c.XMax = top
	for _, v := range xt {
		c.XTicks = append(c.XTicks, tick{v, fmtTick(v)})
	}
	c.YMax *= 1.05
	c.Series = []series{r, g}
	return Plot{File: name + ".svg", Title: title, SVG: c.render()}
}
