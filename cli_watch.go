package main

// CLI verbs about subscriptions: watch-instance, watch-all, unwatch.

import (
	"encoding/json"
	"fmt"
)

// watch subscribes with op and params; outside the repl it then waits,
// printing events, until interrupted or the connection ends.
func (x *cliCmd) watch(op string, params map[string]any, what string) error {
	asJSON := x.opts.json
	res, err := x.call(op, params, func(res json.RawMessage) {
		var r struct {
			ID string `json:"subscription_id"`
		}
		json.Unmarshal(res, &r)
		x.sess.outMu.Lock()
		x.sess.subJSON[r.ID] = asJSON
		x.sess.outMu.Unlock()
	})
	if err != nil {
		return err
	}
	if x.sess.inREPL {
		return x.print(res, func(res json.RawMessage) error {
			return x.kv(res, []string{"subscription_id", "instance_id", "current_state", "current_wal_offset", "wal_offset"})
		})
	}
	var r struct {
		ID string `json:"subscription_id"`
	}
	json.Unmarshal(res, &r)
	fmt.Fprintf(x.sess.env.stderr, "watching %s (subscription %s); interrupt to stop\n", what, r.ID)
	c := x.sess.conn
	select {
	case <-x.sess.env.ctx.Done():
		return nil
	case <-c.done:
		if x.sess.env.ctx.Err() != nil {
			return nil
		}
		return c.lost()
	}
}

func cliWatchInstance(x *cliCmd) func([]string) error {
	noCtx := x.fs.Bool("no-ctx", false, "leave the instance context out of events")
	from := x.fs.Uint64("from-offset", 0, "first replay the instance's events after WAL offset `N`")
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		p := map[string]any{"instance_id": args[0]}
		if *noCtx {
			p["include_ctx"] = false
		}
		if x.isSet("from-offset") {
			p["from_offset"] = *from
		}
		return x.watch("WATCH_INSTANCE", p, "instance "+args[0])
	}
}

func cliWatchAll(x *cliCmd) func([]string) error {
	var machines, events, fromStates, toStates cliList
	x.fs.Var(&machines, "machines", "only these `MACHINES` (comma-separated, repeatable)")
	x.fs.Var(&events, "events", "only these `EVENTS`")
	x.fs.Var(&fromStates, "from-states", "only transitions from these `STATES`")
	x.fs.Var(&toStates, "to-states", "only transitions to these `STATES`")
	noCtx := x.fs.Bool("no-ctx", false, "leave instance contexts out of events")
	from := x.fs.Uint64("from-offset", 0, "first replay matching events after WAL offset `N`")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{}
		for k, l := range map[string]cliList{"machines": machines, "events": events, "from_states": fromStates, "to_states": toStates} {
			if len(l) > 0 {
				p[k] = []string(l)
			}
		}
		if *noCtx {
			p["include_ctx"] = false
		}
		if x.isSet("from-offset") {
			p["from_offset"] = *from
		}
		return x.watch("WATCH_ALL", p, "all instances")
	}
}

func cliUnwatch(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "SUBSCRIPTION_ID"); err != nil {
			return err
		}
		return x.do("UNWATCH", map[string]any{"subscription_id": args[0]}, func(res json.RawMessage) error {
			return x.kv(res, []string{"subscription_id", "removed"})
		})
	}
}
