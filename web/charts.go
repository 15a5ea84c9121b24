package web

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes"
)

// Charts are server-rendered SVG: no chart library, no script, and no
// inline style (the CSP forbids it): geometry is SVG attributes, colours
// are classes in app.css. A chart is computed here as plain data and
// drawn by one templ component (svgChart).

// Chart geometry, in the SVG's own units (it scales to its container).
const (
	chartW      = 640.0
	chartH      = 180.0
	chartLeft   = 52.0
	chartRight  = 12.0
	chartTop    = 14.0
	chartBottom = 24.0
)

type chart struct {
	ID      string // data-testid
	Title   string // the accessible name
	Summary string // one sentence said under the chart, for every reader
	Empty   string // shown instead when there is no data

	YTicks    []tick
	XTicks    []tick
	Lines     []polyline
	Areas     []polyline
	Bars      []bar
	Dots      []dot
	Threshold *hline
	Legend    []legendItem
}

type tick struct {
	Pos   float64
	Label string
}

type polyline struct {
	Class  string
	Points string
}

type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

// dot marks one value of a line, so a line of one or two points shows.
type dot struct {
	X, Y  float64
	Class string
	Title string
}

type hline struct {
	Y     float64
	Label string
}

type legendItem struct {
	Class, Label string
}

// ViewBox is the chart's coordinate system.
func (c chart) ViewBox() string { return fmt.Sprintf("0 0 %g %g", chartW, chartH) }

// Frame lines of the plot area.
func (c chart) Left() string   { return f1(chartLeft) }
func (c chart) Right() string  { return f1(chartW - chartRight) }
func (c chart) Top() string    { return f1(chartTop) }
func (c chart) Bottom() string { return f1(chartH - chartBottom) }

// LabelX places the y-axis labels; LabelY the x-axis labels.
func (c chart) LabelX() string { return f1(chartLeft - 6) }
func (c chart) LabelY() string { return f1(chartH - 6) }

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// timeAxis maps times in [from, to] onto the plot's width.
type timeAxis struct {
	from, to time.Time
}

func (a timeAxis) x(t time.Time) float64 {
	span := a.to.Sub(a.from).Seconds()
	if span <= 0 {
		return chartLeft
	}
	p := t.Sub(a.from).Seconds() / span
	p = min(max(p, 0), 1)
	return chartLeft + p*(chartW-chartLeft-chartRight)
}

// ticks labels the start, middle and end of the axis, relative to now.
func (a timeAxis) ticks() []tick {
	span := a.to.Sub(a.from)
	out := make([]tick, 0, 5)
	for i := 0; i <= 4; i++ {
		t := a.from.Add(span * time.Duration(i) / 4)
		label := "now"
		if i < 4 {
			label = "−" + shortDur(a.to.Sub(t))
		}
		out = append(out, tick{Pos: a.x(t), Label: label})
	}
	return out
}

// valueAxis maps values in [0, max] onto the plot's height.
type valueAxis struct {
	max float64
}

func (a valueAxis) y(v float64) float64 {
	if a.max <= 0 {
		return chartH - chartBottom
	}
	p := min(max(v/a.max, 0), 1)
	return chartH - chartBottom - p*(chartH-chartTop-chartBottom)
}

func (a valueAxis) ticks(format func(float64) string) []tick {
	out := make([]tick, 0, 3)
	for _, f := range []float64{0, 0.5, 1} {
		out = append(out, tick{Pos: a.y(a.max * f), Label: format(a.max * f)})
	}
	return out
}

// niceMax rounds a maximum up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := 1.0
	for p*10 <= v {
		p *= 10
	}
	for p > v*10 {
		p /= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func shortDur(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	case d >= time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	case d >= time.Minute:
		return strconv.Itoa(int(d.Minutes())) + "m"
	}
	return strconv.Itoa(int(d.Seconds())) + "s"
}

func points(xs, ys []float64) string {
	var b strings.Builder
	for i := range xs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f1(xs[i]) + "," + f1(ys[i]))
	}
	return b.String()
}

func fmtMs(us float64) string {
	switch {
	case us == 0:
		return "0"
	case us < 1000:
		return strconv.Itoa(int(us)) + " µs"
	case us < 10000:
		return strconv.FormatFloat(us/1000, 'f', 1, 64) + " ms"
	}
	return strconv.Itoa(int(us/1000)) + " ms"
}

// fmtCount labels a count axis: whole numbers, or one decimal between.
func fmtCount(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// probeWindow and probeBucket shape the probe charts: the last hour
// (probe results are kept for an hour) by the minute.
const (
	probeWindow = time.Hour
	probeBucket = time.Minute
)

// latencyChart draws mean and worst probe latency per minute over the
// last hour, with the probe timeout marked: a probe slower than it fails.
func latencyChart(rows []nodes.ProbeBucket, timeout time.Duration, now time.Time) chart {
	c := chart{ID: "chart-latency", Title: "Probe latency, last hour",
		Legend: []legendItem{{"s-mean", "mean of passed probes"}, {"s-worst", "worst"}, {"s-threshold", "timeout (a slower probe fails)"}}}
	if len(rows) == 0 {
		c.Empty = "No probe results in the last hour."
		return c
	}
	ta := timeAxis{from: now.Add(-probeWindow), to: now}
	top := float64(timeout.Microseconds()) * 1.2
	worst := 0.0
	for _, r := range rows {
		top = max(top, float64(r.MaxUs))
		worst = max(worst, float64(r.MaxUs))
	}
	va := valueAxis{max: niceMax(top)}
	var xs, mean, worstY []float64
	for _, r := range rows {
		x := ta.x(r.Bucket.Add(probeBucket / 2))
		xs = append(xs, x)
		mean = append(mean, va.y(float64(r.AvgUs)))
		worstY = append(worstY, va.y(float64(r.MaxUs)))
		c.Dots = append(c.Dots, dot{X: x, Y: va.y(float64(r.AvgUs)), Class: "s-mean",
			Title: fmt.Sprintf("%s: mean %s, worst %s", r.Bucket.UTC().Format("15:04"), fmtMs(float64(r.AvgUs)), fmtMs(float64(r.MaxUs)))})
		if r.Fails > 0 {
			c.Bars = append(c.Bars, bar{X: x - 2, Y: chartTop, W: 4, H: chartH - chartTop - chartBottom, Class: "s-fail-mark",
				Title: fmt.Sprintf("%s: %d failed probes", r.Bucket.UTC().Format("15:04"), r.Fails)})
		}
	}
	c.Lines = []polyline{{Class: "s-worst", Points: points(xs, worstY)}, {Class: "s-mean", Points: points(xs, mean)}}
	if timeout > 0 {
		c.Threshold = &hline{Y: va.y(float64(timeout.Microseconds())), Label: "timeout " + fmtMs(float64(timeout.Microseconds()))}
	}
	c.YTicks, c.XTicks = va.ticks(fmtMs), ta.ticks()
	last := rows[len(rows)-1]
	c.Summary = fmt.Sprintf("Last minute: mean %s, worst %s; worst in the hour %s; timeout %s.",
		fmtMs(float64(last.AvgUs)), fmtMs(float64(last.MaxUs)), fmtMs(worst), fmtMs(float64(timeout.Microseconds())))
	return c
}

// successChart draws the share of passed probes per minute over the last
// hour; the failure threshold (N failures in a row make the node down)
// is said in the legend and minutes with failures are coloured.
func successChart(rows []nodes.ProbeBucket, failThreshold int, now time.Time) chart {
	c := chart{ID: "chart-success", Title: "Probe success, last hour",
		Legend: []legendItem{{"s-ok", "all passed"}, {"s-partial", "some failed"}, {"s-bad", "all failed"},
			{"s-threshold", fmt.Sprintf("down after %d failures in a row", failThreshold)}}}
	if len(rows) == 0 {
		c.Empty = "No probe results in the last hour."
		return c
	}
	ta := timeAxis{from: now.Add(-probeWindow), to: now}
	va := valueAxis{max: 100}
	w := ta.x(now) - ta.x(now.Add(-probeBucket)) - 1
	var ok, all int64
	for _, r := range rows {
		n := r.Oks + r.Fails
		if n == 0 {
			continue
		}
		ok, all = ok+r.Oks, all+n
		pctOK := 100 * float64(r.Oks) / float64(n)
		class := "s-ok"
		switch {
		case r.Oks == 0:
			class = "s-bad"
		case r.Fails > 0:
			class = "s-partial"
		}
		// A minute that failed entirely still shows as a full red bar.
		h := pctOK
		if r.Oks == 0 {
			h = 100
		}
		y := va.y(h)
		c.Bars = append(c.Bars, bar{X: ta.x(r.Bucket), Y: y, W: max(w, 1), H: chartH - chartBottom - y, Class: class,
			Title: fmt.Sprintf("%s: %d passed, %d failed", r.Bucket.UTC().Format("15:04"), r.Oks, r.Fails)})
	}
	c.YTicks = va.ticks(func(v float64) string { return fmtCount(v) + " %" })
	c.XTicks = ta.ticks()
	c.Summary = fmt.Sprintf("%d of %d probes passed in the last hour (%s).", ok, all, pctText(float64(ok), float64(all)))
	return c
}

func pctText(part, whole float64) string {
	if whole <= 0 {
		return "—"
	}
	return strconv.FormatFloat(100*part/whole, 'f', 1, 64) + " %"
}

// loadWindow is the span of the load charts.
const loadWindow = 24 * time.Hour

// loadChart draws a node's load against its capacity over the last day,
// from the leader's minute samples.
// The node's load now is the chart's last point, so the chart is live
// between the minute samples.
func loadChart(rows []nodes.LoadSample, n nodes.Node, now time.Time) chart {
	c := chart{ID: "chart-load", Title: "Load and capacity, last 24 hours",
		Legend: []legendItem{{"s-used", "placed work (units)"}, {"s-capacity", "capacity"}, {"s-reported", "load the agent reports"}}}
	rows = append(rows, nodes.LoadSample{At: now, Used: n.Used, Capacity: n.Capacity, Reported: n.ReportedLoad})
	ta := timeAxis{from: now.Add(-loadWindow), to: now}
	top := 1.0
	peak := int32(0)
	for _, r := range rows {
		top = max(top, float64(r.Capacity), float64(r.Used), float64(r.Reported))
		peak = max(peak, r.Used)
	}
	va := valueAxis{max: niceMax(top)}
	var xs, used, capy, rep []float64
	for _, r := range rows {
		xs = append(xs, ta.x(r.At))
		used = append(used, va.y(float64(r.Used)))
		capy = append(capy, va.y(float64(r.Capacity)))
		rep = append(rep, va.y(float64(r.Reported)))
	}
	area := points(xs, used)
	base := va.y(0)
	area = f1(xs[0]) + "," + f1(base) + " " + area + " " + f1(xs[len(xs)-1]) + "," + f1(base)
	c.Areas = []polyline{{Class: "s-used", Points: area}}
	c.Lines = []polyline{{Class: "s-capacity", Points: points(xs, capy)}, {Class: "s-reported", Points: points(xs, rep)}}
	c.Dots = []dot{{X: xs[len(xs)-1], Y: used[len(used)-1], Class: "s-used-dot", Title: fmt.Sprintf("now: %d of %d units", n.Used, n.Capacity)}}
	c.YTicks = va.ticks(fmtCount)
	c.XTicks = ta.ticks()
	last := rows[len(rows)-1]
	c.Summary = fmt.Sprintf("Now %d of %d units placed (%d %%); peak %d in the last 24 hours.",
		last.Used, last.Capacity, pct(int64(last.Used), int64(last.Capacity)), peak)
	return c
}

// kindClass is the colour class of a work kind's series.
func kindClass(kind string) string { return "s-kind-" + kind }

// kindTrendChart draws the live work items of each work kind over the
// last day, from the leader's minute samples.
// The live counts now are each line's last point.
func kindTrendChart(rows []nodes.KindSample, live map[string]workCell, now time.Time) chart {
	c := chart{ID: "chart-work-trend", Title: "Live work per kind, last 24 hours"}
	for _, k := range nodes.WorkKinds {
		c.Legend = append(c.Legend, legendItem{kindClass(k), k})
	}
	for _, k := range nodes.WorkKinds {
		rows = append(rows, nodes.KindSample{At: now, Kind: k, Items: live[k].N, Units: live[k].Cost})
	}
	ta := timeAxis{from: now.Add(-loadWindow), to: now}
	top := 4.0
	for _, r := range rows {
		top = max(top, float64(r.Items))
	}
	va := valueAxis{max: niceMax(top)}
	byKind := map[string][2][]float64{}
	for _, r := range rows {
		s := byKind[r.Kind]
		s[0] = append(s[0], ta.x(r.At))
		s[1] = append(s[1], va.y(float64(r.Items)))
		byKind[r.Kind] = s
	}
	for _, k := range nodes.WorkKinds {
		if s, ok := byKind[k]; ok {
			c.Lines = append(c.Lines, polyline{Class: kindClass(k), Points: points(s[0], s[1])})
			last := len(s[0]) - 1
			c.Dots = append(c.Dots, dot{X: s[0][last], Y: s[1][last], Class: kindClass(k) + "-dot", Title: fmt.Sprintf("%s now: %d", k, live[k].N)})
		}
	}
	c.YTicks = va.ticks(fmtCount)
	c.XTicks = ta.ticks()
	return c
}

// kindNowChart draws the live and waiting work items of each kind now as
// horizontal bars.
func kindNowChart(counts map[string]workCell, waiting map[string]int64) chart {
	c := chart{ID: "chart-work-now", Title: "Work per kind now",
		Legend: []legendItem{{"s-used", "placed"}, {"s-bad", "waiting unplaced"}}}
	top := 1.0
	for _, k := range nodes.WorkKinds {
		top = max(top, float64(counts[k].N+waiting[k]))
	}
	va := valueAxis{max: niceMax(top)}
	rowH := (chartH - chartTop - chartBottom) / float64(len(nodes.WorkKinds))
	width := func(v int64) float64 {
		return float64(v) / va.max * (chartW - chartLeft - chartRight)
	}
	var parts []string
	for i, k := range nodes.WorkKinds {
		y := chartTop + float64(i)*rowH + rowH*0.15
		placed, wait := counts[k].N, waiting[k]
		c.YTicks = append(c.YTicks, tick{Pos: y + rowH*0.35, Label: k})
		c.Bars = append(c.Bars, bar{X: chartLeft, Y: y, W: width(placed), H: rowH * 0.7, Class: "s-used",
			Title: fmt.Sprintf("%s: %d placed (%d units)", k, placed, counts[k].Cost)})
		if wait > 0 {
			c.Bars = append(c.Bars, bar{X: chartLeft + width(placed), Y: y, W: width(wait), H: rowH * 0.7, Class: "s-bad",
				Title: fmt.Sprintf("%s: %d waiting unplaced", k, wait)})
		}
		parts = append(parts, fmt.Sprintf("%s %d", k, placed))
	}
	for _, f := range []float64{0, 0.5, 1} {
		c.XTicks = append(c.XTicks, tick{Pos: chartLeft + f*(chartW-chartLeft-chartRight), Label: fmtCount(va.max * f)})
	}
	c.Summary = "Placed now: " + strings.Join(parts, ", ") + "."
	return c
}

func anchorFor(i, n int) string {
	switch i {
	case 0:
		return "start"
	case n - 1:
		return "end"
	}
	return "middle"
}

// nodesUptime is an uptime as the node page shows it.
type nodesUptime nodes.Uptime

// Text is the uptime in percent, or a dash when unknown.
func (u nodesUptime) Text() string {
	if !u.Known {
		return "—"
	}
	if u.Percent >= 99.995 {
		return "100 %"
	}
	return strconv.FormatFloat(u.Percent, 'f', 2, 64) + " %"
}

// Class colours the meter: green from 99.9 %, amber from 99 %, red below.
func (u nodesUptime) Class() string {
	switch {
	case u.Percent >= 99.9:
		return "s-ok"
	case u.Percent >= 99:
		return "s-partial"
	}
	return "s-bad"
}

// Detail says how long the node was not up in the window.
func (u nodesUptime) Detail() string {
	if !u.Known {
		return "no health known in this window yet"
	}
	if u.Down < time.Second {
		return "no downtime"
	}
	return "not up for " + u.Down.Round(time.Second).String()
}
