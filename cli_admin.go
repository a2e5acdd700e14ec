package main

// CLI verbs about the server: ping, info, the write-ahead log, compaction,
// snapshots, flush-all, and hash-token, which needs no server.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

func cliPing(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("PING", nil, func(json.RawMessage) error {
			x.out.WriteString("pong\n")
			return nil
		})
	}
}

func cliInfo(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("INFO", nil, func(res json.RawMessage) error {
			return x.kv(res, []string{"server_name", "server_version", "protocol_version", "features"})
		})
	}
}

func cliWalRead(x *cliCmd) func([]string) error {
	from := x.fs.Uint64("from", 0, "first WAL offset `N` to read (0 or 1: the oldest retained)")
	limit := x.fs.Uint("limit", 100, "at most `N` records (max 1000)")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		p := map[string]any{"from_offset": *from}
		if x.isSet("limit") {
			p["limit"] = *limit
		}
		return x.do("WAL_READ", p, func(res json.RawMessage) error {
			var r struct {
				NextOffset uint64 `json:"next_offset"`
				Records    []struct {
					Offset uint64                     `json:"offset"`
					Entry  map[string]json.RawMessage `json:"entry"`
				} `json:"records"`
			}
			if err := json.Unmarshal(res, &r); err != nil {
				return err
			}
			rows := make([][]string, 0, len(r.Records))
			for _, rec := range r.Records {
				typ := cliValue("type", rec.Entry["type"])
				delete(rec.Entry, "type")
				ts := "-"
				if raw, ok := rec.Entry["ts"]; ok {
					ts = cliValue("ts_at", raw)
					delete(rec.Entry, "ts")
				}
				rows = append(rows, []string{strconv.FormatUint(rec.Offset, 10), ts, typ, cliMarshal(rec.Entry)})
			}
			x.table([]string{"OFFSET", "TIME", "TYPE", "ENTRY"}, rows)
			fmt.Fprintf(&x.out, "(%s; next_offset %d)\n", cliCount(len(rows), "record"), r.NextOffset)
			return nil
		})
	}
}

func cliWalStats(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("WAL_STATS", nil, func(res json.RawMessage) error {
			return x.kv(res, []string{"entry_count", "latest_offset", "segment_count", "total_size_bytes"}, "io_stats")
		})
	}
}

func cliCompactVerb(x *cliCmd) func([]string) error {
	force := x.fs.Bool("force", false, "also re-snapshot instances changed since their last snapshot")
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("COMPACT", map[string]any{"force_snapshot": *force}, func(res json.RawMessage) error {
			return x.kv(res, nil)
		})
	}
}

func cliPromote(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("PROMOTE", map[string]any{}, func(res json.RawMessage) error {
			return x.kv(res, []string{"role", "epoch", "offset"})
		})
	}
}

func cliSnapshotInstance(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "ID"); err != nil {
			return err
		}
		return x.do("SNAPSHOT_INSTANCE", map[string]any{"instance_id": args[0]}, func(res json.RawMessage) error {
			return x.kv(res, []string{"instance_id", "snapshot_id", "wal_offset", "size_bytes", "checksum"})
		})
	}
}

func cliFlushAll(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("FLUSH_ALL", nil, func(res json.RawMessage) error {
			return x.kv(res, []string{"flushed", "machines_removed", "instances_removed"})
		})
	}
}

func cliHashToken(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args, "TOKEN"); err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(args[0]))
		h := hex.EncodeToString(sum[:])
		if x.opts.json {
			x.printJSON([]byte(cliMarshal(map[string]string{"token_hash": h})))
			return nil
		}
		x.out.WriteString(h + "\n")
		return nil
	}
}
