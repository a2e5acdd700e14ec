package main

// CLI output: results printed as JSON or for humans (key: value lines,
// aligned tables, values, times and counts).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

func (x *cliCmd) print(res json.RawMessage, human func(res json.RawMessage) error) error {
	if x.opts.json {
		x.printJSON(res)
		return nil
	}
	return human(res)
}

// printJSON prints one compact JSON value on its own line.
func (x *cliCmd) printJSON(b []byte) {
	if err := json.Compact(&x.out, b); err != nil {
		x.out.Write(b)
	}
	x.out.WriteByte('\n')
}

// kv prints a result object as aligned "key: value" lines: keys in order
// first, then the rest sorted. Objects named in flatten print their fields
// as "key.field".
func (x *cliCmd) kv(res json.RawMessage, order []string, flatten ...string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(res, &m); err != nil {
		return fmt.Errorf("unexpected result %s", res)
	}
	type row struct{ k, v string }
	var rows []row
	for _, k := range cliKeyOrder(m, order) {
		if cliContains(flatten, k) {
			var sub map[string]json.RawMessage
			if json.Unmarshal(m[k], &sub) == nil {
				for _, sk := range cliSortedKeys(sub) {
					rows = append(rows, row{k + "." + sk, cliValue(sk, sub[sk])})
				}
				continue
			}
		}
		rows = append(rows, row{k, cliValue(k, m[k])})
	}
	w := 0
	for _, r := range rows {
		w = max(w, len(r.k))
	}
	for _, r := range rows {
		fmt.Fprintf(&x.out, "%-*s %s\n", w+1, r.k+":", r.v)
	}
	return nil
}

// cliKeyOrder is order's keys present in m, then m's other keys sorted.
func cliKeyOrder(m map[string]json.RawMessage, order []string) []string {
	var keys []string
	for _, k := range order {
		if _, ok := m[k]; ok {
			keys = append(keys, k)
		}
	}
	for _, k := range cliSortedKeys(m) {
		if !cliContains(order, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

func cliContains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// cliValue renders one JSON value for humans: strings bare, lists of
// strings comma-separated, *_at milliseconds as UTC times, the rest as
// compact JSON.
func cliValue(key string, raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	switch t := v.(type) {
	case string:
		return t
	case float64:
		if strings.HasSuffix(key, "_at") {
			if ms, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				return cliTime(ms)
			}
		}
		return string(raw)
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return cliCompact(raw)
			}
			parts = append(parts, s)
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ", ")
	case nil:
		return "-"
	}
	return cliCompact(raw)
}

// cliTime formats Unix milliseconds as a UTC timestamp.
func cliTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

func cliCompact(raw []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// table prints rows under a header, columns aligned.
func (x *cliCmd) table(header []string, rows [][]string) {
	lines := []string{strings.Join(header, "\t")}
	for _, r := range rows {
		lines = append(lines, strings.Join(r, "\t"))
	}
	cliTabs(&x.out, lines)
}

// cliTabs writes tab-separated lines to w with the columns aligned and no
// trailing spaces.
func cliTabs(w io.Writer, lines []string) {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintln(tw, l)
	}
	tw.Flush()
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l != "" {
			io.WriteString(w, strings.TrimRight(l, " \n")+"\n")
		}
	}
}

// cliSortedKeys returns m's keys in order.
func cliSortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// cliMarshal encodes v as compact JSON without HTML escaping.
func cliMarshal(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}

// cliCount is "1 thing" or "n things".
func cliCount(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.Itoa(n) + " " + thing + "s"
}
