package main

import (
	"encoding/json"
	"fmt"
	"time"
)

// The history verb: INSTANCE_HISTORY, newest first.

func cliHistory(x *cliCmd) func([]string) error {
	limit := x.fs.Uint("limit", 100, "at most `N` entries (max 1000)")
	before := x.fs.Uint64("before", 0, "only entries older than offset `N` (the next_before_offset of a previous page)")
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		p := map[string]any{"instance_id": args[0]}
		if x.isSet("limit") {
			p["limit"] = *limit
		}
		if x.isSet("before") {
			p["before_offset"] = *before
		}
		return x.do("INSTANCE_HISTORY", p, func(res json.RawMessage) error {
			var r historyResult
			if err := json.Unmarshal(res, &r); err != nil {
				return err
			}
			rows := make([][]string, 0, len(r.Items))
			for _, it := range r.Items {
				what := "created in " + it.ToState
				if it.Event != nil {
					what = fmt.Sprintf("%s -%s-> %s", *it.FromState, *it.Event, it.ToState)
				}
				rows = append(rows, []string{fmt.Sprint(it.Offset), time.UnixMilli(it.Time).UTC().Format(time.RFC3339), what, it.Source, string(it.Payload)})
			}
			x.table([]string{"OFFSET", "TIME", "TRANSITION", "SOURCE", "PAYLOAD"}, rows)
			switch {
			case r.NextBeforeOffset != nil:
				fmt.Fprintf(&x.out, "more: stmdb history %s --before %d\n", args[0], *r.NextBeforeOffset)
			case !r.Complete:
				fmt.Fprintf(&x.out, "(older history is not retained: the log starts at offset %d)\n", r.RetainedFrom)
			}
			return nil
		})
	}
}
