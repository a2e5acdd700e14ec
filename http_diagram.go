package main

// State diagrams as SVG for the console, laid out here from the machine's
// definition: no external renderer. States are placed in layers by their
// distance from the initial state (unreachable ones last), left to right,
// in definition order within a layer (the order describe-machine lists
// them in); edges carry describe-machine's labels (event, timer delay,
// guard). Each node says how many instances are in its state.

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"strconv"
	"strings"
)

const (
	svgNodeH   = 44
	svgRowGap  = 40
	svgColGap  = 150
	svgMargin  = 30
	svgCharW   = 7.2
	svgLoopTop = 34
)

func (s *server) httpDiagram(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("machine")
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 32)
	if err != nil || v == 0 {
		httpWriteError(w, 0, badParam("version", "field 'version' must be an integer from 1"))
		return
	}
	s.st.mu.RLock()
	mv := s.st.machines[name][uint32(v)]
	counts := map[string]int{}
	if mv != nil {
		for _, in := range s.st.instances {
			if in.mv == mv {
				counts[in.state]++
			}
		}
	}
	s.st.mu.RUnlock()
	if mv == nil {
		httpWriteError(w, 0, s.machineNotFound(name, uint32(v)))
		return
	}
	var def cliMachineDef
	if err := json.Unmarshal(mv.def, &def); err != nil {
		httpWriteError(w, 0, newError(codeInternalError, "machine definition: %v", err))
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write([]byte(diagramSVG(name, uint(v), &def, counts, r.URL.Query().Get("highlight"))))
}

type svgNode struct {
	name       string
	x, y, w, h float64
	layer      int
}

// diagramLayers assigns each state its breadth-first distance from the
// initial state; states it cannot reach come one layer after the last.
func diagramLayers(def *cliMachineDef, states []string) map[string]int {
	layer := map[string]int{def.Initial: 0}
	queue := []string{def.Initial}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, t := range def.Transitions {
			for _, f := range t.From {
				if _, seen := layer[t.To]; f == cur && !seen {
					layer[t.To] = layer[cur] + 1
					queue = append(queue, t.To)
				}
			}
		}
	}
	maxL := 0
	for _, l := range layer {
		maxL = max(maxL, l)
	}
	for _, st := range states {
		if _, ok := layer[st]; !ok {
			layer[st] = maxL + 1
		}
	}
	return layer
}

// diagramSVG renders def as an SVG document.
func diagramSVG(name string, ver uint, def *cliMachineDef, counts map[string]int, highlight string) string {
	states := diagramStates(def)
	layers := diagramLayers(def, states)
	nodes := map[string]*svgNode{}
	var cols [][]*svgNode
	for _, st := range states {
		l := layers[st]
		for len(cols) <= l {
			cols = append(cols, nil)
		}
		n := &svgNode{name: st, layer: l, h: svgNodeH}
		n.w = max(90, float64(len([]rune(st)))*svgCharW+28)
		cols[l] = append(cols[l], n)
		nodes[st] = n
	}
	// Columns left to right, nodes top to bottom.
	x, height := float64(svgMargin), 0.0
	for _, col := range cols {
		cw := 0.0
		for _, n := range col {
			cw = max(cw, n.w)
		}
		y := float64(svgMargin + svgLoopTop)
		for _, n := range col {
			n.x, n.y = x+(cw-n.w)/2, y
			y += n.h + svgRowGap + svgLoopTop
		}
		height = max(height, y)
		x += cw + svgColGap
	}
	width := x - svgColGap + svgMargin

	// Edges, one per (from, to), their labels stacked.
	type edge struct {
		from, to string
		labels   []string
	}
	var edges []*edge
	byPair := map[[2]string]*edge{}
	for _, t := range def.Transitions {
		label := diagramLabel(t.Event, t.Guard, t.After)
		for _, f := range t.From {
			k := [2]string{f, t.To}
			e := byPair[k]
			if e == nil {
				e = &edge{from: f, to: t.To}
				byPair[k] = e
				edges = append(edges, e)
			}
			e.labels = append(e.labels, label)
		}
	}

	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="diagram" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" data-machine="%s" data-version="%d" role="img" aria-label="%s">`,
		width, height+svgMargin, width, height+svgMargin, esc(name), ver, esc(fmt.Sprintf("state diagram of %s v%d", name, ver)))
	b.WriteString(`<style>.diagram{font:12px system-ui,sans-serif}.node rect{fill:#f4f6fa;stroke:#5b6b85;stroke-width:1.2}.node.initial rect{stroke-width:2.4}.node.cur rect{fill:#ffe58a;stroke:#b07d00;stroke-width:2.4}.node .n{font-weight:600}.node .c{fill:#5b6b85;font-size:11px}.edge path{fill:none;stroke:#7d8aa3;stroke-width:1.3}.edge text{fill:#34405a;font-size:11px}</style>`)
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#7d8aa3"/></marker></defs>`)
	for _, e := range edges {
		f, t := nodes[e.from], nodes[e.to]
		var path string
		var lx, ly float64
		switch {
		case f == t:
			cx, top := f.x+f.w/2, f.y
			path = fmt.Sprintf("M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f", cx-14, top, cx-30, top-svgLoopTop, cx+30, top-svgLoopTop, cx+14, top)
			lx, ly = cx, top-svgLoopTop+2
		case t.layer > f.layer:
			x1, y1 := f.x+f.w, f.y+f.h/2
			x2, y2 := t.x, t.y+t.h/2
			mx := (x1 + x2) / 2
			path = fmt.Sprintf("M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f", x1, y1, mx, y1, mx, y2, x2, y2)
			lx, ly = mx, (y1+y2)/2-4
		default:
			// Back or sideways: arc below both nodes.
			x1, y1 := f.x+f.w/2, f.y+f.h
			x2, y2 := t.x+t.w/2, t.y+t.h
			low := max(y1, y2) + svgRowGap*0.9
			path = fmt.Sprintf("M%.1f,%.1f C%.1f,%.1f %.1f,%.1f %.1f,%.1f", x1, y1, x1, low, x2, low, x2, y2)
			lx, ly = (x1+x2)/2, low-2
		}
		fmt.Fprintf(&b, `<g class="edge" data-from="%s" data-to="%s"><path d="%s" marker-end="url(#arrow)"/>`, esc(e.from), esc(e.to), path)
		for i, l := range e.labels {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, lx, ly-float64(len(e.labels)-1-i)*13, esc(l))
		}
		b.WriteString(`</g>`)
	}
	for _, st := range states {
		n := nodes[st]
		class := "node"
		if st == def.Initial {
			class += " initial"
		}
		if st == highlight {
			class += " cur"
		}
		cnt := counts[st]
		unit := "instances"
		if cnt == 1 {
			unit = "instance"
		}
		fmt.Fprintf(&b, `<g class="%s" data-state="%s" data-count="%d"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="8"/><text class="n" x="%.1f" y="%.1f" text-anchor="middle">%s</text><text class="c" x="%.1f" y="%.1f" text-anchor="middle">%d %s</text></g>`,
			class, esc(st), cnt, n.x, n.y, n.w, n.h, n.x+n.w/2, n.y+18, esc(st), n.x+n.w/2, n.y+34, cnt, unit)
	}
	b.WriteString(`</svg>`)
	return b.String()
}
