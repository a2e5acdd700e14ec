package main

// State diagrams of machine definitions for describe-machine: Mermaid
// stateDiagram-v2 and Graphviz dot.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// cliMachineDef is a machine definition as GET_MACHINE returns it: what
// describe-machine and the console's SVG diagrams draw.
type cliMachineDef struct {
	States      []string `json:"states"`
	Initial     string   `json:"initial"`
	Transitions []struct {
		From  []string `json:"from"`
		Event string   `json:"event"`
		To    string   `json:"to"`
		Guard string   `json:"guard"`
		After int64    `json:"after_ms"`
	} `json:"transitions"`
	Meta json.RawMessage `json:"meta"`
}

// diagramLabel is a transition's edge label: "EVENT", "EVENT after 30m"
// for a timed transition, and " [guard]" after either when it has one.
func diagramLabel(event, guard string, afterMS int64) string {
	if afterMS > 0 {
		event += " after " + diagramDelay(afterMS)
	}
	if guard == "" {
		return event
	}
	return event + " [" + guard + "]"
}

// diagramDelay writes a timer delay in the largest unit that divides it
// exactly: 30m, 36h, 1500ms.
func diagramDelay(ms int64) string {
	for _, u := range []struct {
		n    int64
		unit string
	}{{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}} {
		if ms%u.n == 0 {
			return strconv.FormatInt(ms/u.n, 10) + u.unit
		}
	}
	return strconv.FormatInt(ms, 10) + "ms"
}

// diagramStates is every state in definition order, without duplicates,
// including any a transition names that the list lacks.
func diagramStates(def *cliMachineDef) []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range def.States {
		add(s)
	}
	add(def.Initial)
	for _, t := range def.Transitions {
		for _, f := range t.From {
			add(f)
		}
		add(t.To)
	}
	return out
}

// diagramMermaid renders def as a Mermaid stateDiagram-v2. States whose
// names are not plain identifiers get an alias (s1, s2, ...) declared with
// their name as the description; labels escape Mermaid's special
// characters as entity codes.
func diagramMermaid(name string, ver uint, def *cliMachineDef) string {
	var b strings.Builder
	fmt.Fprintf(&b, "stateDiagram-v2\n    %%%% %s v%d\n", strings.ReplaceAll(name, "\n", " "), ver)
	ids := map[string]string{}
	used := map[string]bool{}
	states := diagramStates(def)
	for _, s := range states {
		if diagramIsIdent(s) && !diagramMermaidKeywords[s] {
			ids[s] = s
			used[s] = true
		}
	}
	n := 0
	for _, s := range states {
		if _, ok := ids[s]; ok {
			fmt.Fprintf(&b, "    %s\n", s)
			continue
		}
		id := ""
		for {
			n++
			id = "s_" + strconv.Itoa(n)
			if !used[id] {
				break
			}
		}
		ids[s], used[id] = id, true
		fmt.Fprintf(&b, "    state \"%s\" as %s\n", diagramMermaidText(s), id)
	}
	fmt.Fprintf(&b, "    [*] --> %s\n", ids[def.Initial])
	for _, t := range def.Transitions {
		for _, f := range t.From {
			fmt.Fprintf(&b, "    %s --> %s : %s\n", ids[f], ids[t.To], diagramMermaidText(diagramLabel(t.Event, t.Guard, t.After)))
		}
	}
	return b.String()
}

// diagramMermaidKeywords may not be used as bare state ids.
var diagramMermaidKeywords = map[string]bool{"state": true, "direction": true, "note": true, "end": true,
	"class": true, "classDef": true, "style": true, "click": true, "as": true, "stateDiagram": true}

// diagramIsIdent reports whether s can be a Mermaid state id as it is.
func diagramIsIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// diagramMermaidText escapes text for Mermaid labels and descriptions.
func diagramMermaidText(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch c {
		case '#':
			b.WriteString("#35;")
		case ';':
			b.WriteString("#59;")
		case '"':
			b.WriteString("#quot;")
		case ':':
			b.WriteString("#58;")
		case '\n', '\r', '\t':
			b.WriteByte(' ')
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// diagramDot renders def as a Graphviz digraph: a point marks the start,
// its edge leads to the initial state (drawn bold), transitions are edges
// labelled with their event and guard.
func diagramDot(name string, ver uint, def *cliMachineDef) string {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %s {\n", diagramDotID(fmt.Sprintf("%s v%d", name, ver)))
	b.WriteString("    rankdir=LR;\n    node [shape=box, style=rounded];\n")
	states := diagramStates(def)
	start := "__start__"
	for cliContains(states, start) {
		start += "_"
	}
	fmt.Fprintf(&b, "    %s [shape=point, width=0.15, label=\"\"];\n", diagramDotID(start))
	for _, s := range states {
		if s == def.Initial {
			fmt.Fprintf(&b, "    %s [style=\"rounded,bold\"];\n", diagramDotID(s))
		} else {
			fmt.Fprintf(&b, "    %s;\n", diagramDotID(s))
		}
	}
	fmt.Fprintf(&b, "    %s -> %s;\n", diagramDotID(start), diagramDotID(def.Initial))
	for _, t := range def.Transitions {
		for _, f := range t.From {
			fmt.Fprintf(&b, "    %s -> %s [label=%s];\n", diagramDotID(f), diagramDotID(t.To), diagramDotID(diagramLabel(t.Event, t.Guard, t.After)))
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// diagramDotID quotes s as a dot string: backslashes and quotes escaped
// (labels treat a backslash as an escape), line breaks as \n.
func diagramDotID(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
