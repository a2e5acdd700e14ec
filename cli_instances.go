package main

// CLI verbs about instances: create, get, list, delete, apply-event, and
// batch.

import (
	"encoding/json"
	"fmt"
	"strconv"
)

func cliCreateInstance(x *cliCmd) func([]string) error {
	machine := x.fs.String("m", "", "`MACHINE` name (required)")
	ver := x.fs.Uint("V", 0, "machine `VER`sion (required)")
	id := x.fs.String("i", "", "instance `ID` (default: a generated UUID)")
	ctx := x.fs.String("c", "", "initial context `CTX`: a JSON object, @file or @- (default {})")
	key := x.fs.String("idempotency-key", "", "idempotency `KEY`: a retry with the same key returns the first result")
	return func(args []string) error {
		if err := x.required("m", "V"); err != nil {
			return err
		}
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{"machine": *machine, "version": *ver}
		if x.isSet("i") {
			p["instance_id"] = *id
		}
		if x.isSet("c") {
			c, err := x.jsonObjectArg("-c", *ctx)
			if err != nil {
				return err
			}
			p["initial_ctx"] = c
		}
		if x.isSet("idempotency-key") {
			p["idempotency_key"] = *key
		}
		return x.do("CREATE_INSTANCE", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"instance_id", "state", "wal_offset"})
		})
	}
}

func cliGetInstance(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		return x.do("GET_INSTANCE", map[string]any{"instance_id": args[0]}, func(res json.RawMessage) error {
			fmt.Fprintf(&x.out, "instance_id:     %s\n", args[0])
			return x.kv(res, []string{"machine", "version", "state", "ctx", "last_event_id", "last_wal_offset", "created_at", "updated_at"})
		})
	}
}

func cliListInstances(x *cliCmd) func([]string) error {
	machine := x.fs.String("machine", "", "only instances of `MACHINE`")
	state := x.fs.String("state", "", "only instances in `STATE`")
	limit := x.fs.Uint("limit", 100, "at most `N` instances (max 1000)")
	offset := x.fs.Uint64("offset", 0, "skip the first `N` instances")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{}
		if x.isSet("machine") {
			p["machine"] = *machine
		}
		if x.isSet("state") {
			p["state"] = *state
		}
		if x.isSet("limit") {
			p["limit"] = *limit
		}
		if x.isSet("offset") {
			p["offset"] = *offset
		}
		return x.do("LIST_INSTANCES", p, func(res json.RawMessage) error {
			var r struct {
				HasMore   bool `json:"has_more"`
				Instances []struct {
					ID            string `json:"id"`
					Machine       string `json:"machine"`
					Version       uint32 `json:"version"`
					State         string `json:"state"`
					LastWalOffset uint64 `json:"last_wal_offset"`
					CreatedAt     int64  `json:"created_at"`
					UpdatedAt     int64  `json:"updated_at"`
				} `json:"instances"`
				Total uint64 `json:"total"`
			}
			if err := json.Unmarshal(res, &r); err != nil {
				return err
			}
			rows := make([][]string, 0, len(r.Instances))
			for _, in := range r.Instances {
				rows = append(rows, []string{in.ID, in.Machine, strconv.FormatUint(uint64(in.Version), 10), in.State,
					strconv.FormatUint(in.LastWalOffset, 10), cliTime(in.UpdatedAt)})
			}
			x.table([]string{"ID", "MACHINE", "VERSION", "STATE", "LAST_WAL_OFFSET", "UPDATED_AT"}, rows)
			fmt.Fprintf(&x.out, "(%d of %d instances", len(rows), r.Total)
			if r.HasMore {
				fmt.Fprintf(&x.out, "; more with --offset %d", *offset+uint64(len(rows)))
			}
			x.out.WriteString(")\n")
			return nil
		})
	}
}

func cliDeleteInstance(x *cliCmd) func([]string) error {
	key := x.fs.String("idempotency-key", "", "idempotency `KEY`")
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		p := map[string]any{"instance_id": args[0]}
		if x.isSet("idempotency-key") {
			p["idempotency_key"] = *key
		}
		return x.do("DELETE_INSTANCE", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"instance_id", "deleted", "wal_offset"})
		})
	}
}

func cliApplyEvent(x *cliCmd) func([]string) error {
	id := x.fs.String("i", "", "instance `ID` (required)")
	event := x.fs.String("e", "", "`EVENT` name (required)")
	payload := x.fs.String("p", "", "`PAYLOAD` merged into the context: a JSON object, @file or @- (default {})")
	expState := x.fs.String("expected-state", "", "fail with CONFLICT unless the instance is in `STATE`")
	expOffset := x.fs.Uint64("expected-offset", 0, "fail with CONFLICT unless the instance's last_wal_offset is `N`")
	eventID := x.fs.String("event-id", "", "`ID` recorded as the instance's last_event_id")
	key := x.fs.String("idempotency-key", "", "idempotency `KEY`")
	return func(args []string) error {
		if err := x.required("i", "e"); err != nil {
			return err
		}
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{"instance_id": *id, "event": *event}
		if x.isSet("p") {
			b, err := x.jsonObjectArg("-p", *payload)
			if err != nil {
				return err
			}
			p["payload"] = b
		}
		if x.isSet("expected-state") {
			p["expected_state"] = *expState
		}
		if x.isSet("expected-offset") {
			p["expected_wal_offset"] = *expOffset
		}
		if x.isSet("event-id") {
			p["event_id"] = *eventID
		}
		if x.isSet("idempotency-key") {
			p["idempotency_key"] = *key
		}
		return x.do("APPLY_EVENT", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"applied", "from_state", "to_state", "event_id", "wal_offset", "ctx"})
		})
	}
}

func cliBatch(x *cliCmd) func([]string) error {
	atomic := x.fs.Bool("atomic", false, "all ops apply or none does (default: best effort, one by one)")
	return func(args []string) error {
		if err := x.nargs(args, "OPS"); err != nil {
			return err
		}
		raw, err := x.jsonArg("OPS", args[0])
		if err != nil {
			return err
		}
		var ops json.RawMessage
		if raw[0] == '[' {
			ops = raw
		} else {
			var obj struct {
				Ops json.RawMessage `json:"ops"`
			}
			if json.Unmarshal(raw, &obj) != nil || len(obj.Ops) == 0 || obj.Ops[0] != '[' {
				return cliUsagef("OPS: want a JSON array of {\"op\",\"params\"} or an object with an \"ops\" array")
			}
			ops = obj.Ops
		}
		mode := "best_effort"
		if *atomic {
			mode = "atomic"
		}
		res, err := x.call("BATCH", map[string]any{"mode": mode, "ops": ops}, nil)
		if err != nil {
			return err
		}
		var r struct {
			Results []struct {
				Status string          `json:"status"`
				Result json.RawMessage `json:"result"`
				Error  *errorBody      `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(res, &r); err != nil {
			return err
		}
		failed := 0
		rows := make([][]string, 0, len(r.Results))
		for i, s := range r.Results {
			detail := cliCompact(s.Result)
			if s.Status != "ok" {
				failed++
				if s.Error != nil {
					detail = s.Error.Code + ": " + s.Error.Message
				}
			}
			rows = append(rows, []string{strconv.Itoa(i), s.Status, detail})
		}
		if x.opts.json {
			x.printJSON(res)
		} else {
			x.table([]string{"#", "STATUS", "RESULT"}, rows)
			fmt.Fprintf(&x.out, "(%d ok, %d failed)\n", len(rows)-failed, failed)
		}
		if failed > 0 {
			return &cliExitError{1}
		}
		return nil
	}
}
