package web

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Point is one value of a per-round series: X is the round number.
type Point struct{ X, Y float64 }

// Series is a named sequence of points, drawn as one line. Non-finite
// values are skipped.
type Series struct {
	Name   string
	Points []Point
}

// PlotView is a line chart laid out on the server, ready for the plot
// template to draw as inline SVG (no script).
type PlotView struct {
	Title         string
	Empty         bool
	W, H          int
	Left, Right   string // plot area edges (x)
	Top, Bottom   string // plot area edges (y)
	XTicks        []plotTick
	YTicks        []plotTick
	Lines         []plotLine
	Legend        bool
	XLabel        string
	XLabelX       string
	XLabelY       string
	TickTextLeft  string
	TickTextBelow string
}

type plotTick struct {
	Pos   string // x for XTicks, y for YTicks
	Label string
}

type plotLine struct {
	Name    string
	Class   string // s0..s5, for the stylesheet's colours
	Points  string // "x,y x,y ..."
	Dots    []plotDot
	LegendY string
}

type plotDot struct {
	X, Y, Title string
}

const (
	plotW, plotH                   = 420, 210
	padL, padR, padT, padB float64 = 52, 14, 12, 34
)

func px(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// NewPlot lays out series as lines on shared axes. Any number of series of
// any per-round quantity can be given (update norm, contributors, accuracy,
// loss, ...); a plot with no finite point reports Empty.
func NewPlot(title string, series ...Series) PlotView {
	p := PlotView{Title: title, W: plotW, H: plotH, XLabel: "round"}
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	n := 0
	for _, s := range series {
		for _, pt := range s.Points {
			if !finite(pt.X) || !finite(pt.Y) {
				continue
			}
			xmin, xmax = math.Min(xmin, pt.X), math.Max(xmax, pt.X)
			ymin, ymax = math.Min(ymin, pt.Y), math.Max(ymax, pt.Y)
			n++
		}
	}
	if n == 0 {
		p.Empty = true
		return p
	}
	// Axes: x over the rounds shown, y over nice ticks covering the values.
	if xmin == xmax {
		xmin, xmax = xmin-1, xmax+1
	}
	switch {
	case ymin == ymax && ymin > 0:
		ymin, ymax = 0, ymax*1.25
	case ymin == ymax:
		ymin, ymax = ymin-1, ymax+1
	case ymin > 0 && ymin <= ymax/2:
		ymin = 0
	}
	ystep := niceStep((ymax - ymin) / 4)
	ylo, yhi := math.Floor(ymin/ystep)*ystep, math.Ceil(ymax/ystep)*ystep
	if yhi == ylo {
		yhi = ylo + ystep
	}
	left, right := padL, float64(plotW)-padR
	top, bottom := padT, float64(plotH)-padB
	sx := func(x float64) float64 { return left + (x-xmin)/(xmax-xmin)*(right-left) }
	sy := func(y float64) float64 { return bottom - (y-ylo)/(yhi-ylo)*(bottom-top) }
	p.Left, p.Right, p.Top, p.Bottom = px(left), px(right), px(top), px(bottom)
	p.TickTextLeft, p.TickTextBelow = px(left-6), px(bottom+14)
	p.XLabelX, p.XLabelY = px((left+right)/2), px(bottom+28)

	for y := ylo; y <= yhi+ystep/2; y += ystep {
		p.YTicks = append(p.YTicks, plotTick{Pos: px(sy(y)), Label: tickLabel(y, ystep)})
	}
	xstep := math.Max(1, math.Ceil(niceStep((xmax-xmin)/8)))
	for x := math.Ceil(xmin/xstep) * xstep; x <= xmax+1e-9; x += xstep {
		p.XTicks = append(p.XTicks, plotTick{Pos: px(sx(x)), Label: tickLabel(x, xstep)})
	}

	for i, s := range series {
		l := plotLine{Name: s.Name, Class: fmt.Sprintf("s%d", i%6), LegendY: px(top + 4 + float64(i)*14)}
		var pts []string
		for _, pt := range s.Points {
			if !finite(pt.X) || !finite(pt.Y) {
				continue
			}
			x, y := px(sx(pt.X)), px(sy(pt.Y))
			pts = append(pts, x+","+y)
			l.Dots = append(l.Dots, plotDot{X: x, Y: y, Title: fmt.Sprintf("%s, round %s: %s", s.Name, tickLabel(pt.X, 1), fmtFloat(pt.Y))})
		}
		l.Points = strings.Join(pts, " ")
		p.Lines = append(p.Lines, l)
	}
	p.Legend = len(series) > 1
	return p
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// niceStep rounds a raw tick step to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if !(raw > 0) || !finite(raw) {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch f := raw / mag; {
	case f <= 1:
		return mag
	case f <= 2:
		return 2 * mag
	case f <= 5:
		return 5 * mag
	default:
		return 10 * mag
	}
}

// tickLabel prints v, rounded to the precision of step.
func tickLabel(v, step float64) string {
	v = math.Round(v/step) * step
	if v == 0 {
		return "0"
	}
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step)))
	}
	if math.Abs(v) >= 1e6 || (math.Abs(v) < 1e-4) {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}
