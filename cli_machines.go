package main

// CLI verbs about machines: put, get, list, and describe as a diagram.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

func cliPutMachine(x *cliCmd) func([]string) error {
	name := x.fs.String("n", "", "machine `NAME` (required)")
	ver := x.fs.Uint("v", 0, "machine `VER`sion, 1 or more (required)")
	return func(args []string) error {
		if err := x.required("n", "v"); err != nil {
			return err
		}
		if err := x.nargs(args, "DEF"); err != nil {
			return err
		}
		def, err := x.jsonObjectArg("DEF", args[0])
		if err != nil {
			return err
		}
		p := map[string]any{"machine": *name, "version": *ver, "definition": def}
		return x.do("PUT_MACHINE", p, func(res json.RawMessage) error {
			return x.kv(res, []string{"machine", "version", "created", "stored_checksum"})
		})
	}
}

// cliGetMachineDef fetches and decodes a machine version.
func (x *cliCmd) getMachine(name string, ver uint) (json.RawMessage, *cliMachineDef, string, error) {
	res, err := x.call("GET_MACHINE", map[string]any{"machine": name, "version": ver}, nil)
	if err != nil {
		return nil, nil, "", err
	}
	var r struct {
		Checksum   string        `json:"checksum"`
		Definition cliMachineDef `json:"definition"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, nil, "", fmt.Errorf("unexpected GET_MACHINE result: %v", err)
	}
	return res, &r.Definition, r.Checksum, nil
}

func cliGetMachine(x *cliCmd) func([]string) error {
	name := x.fs.String("n", "", "machine `NAME` (required)")
	ver := x.fs.Uint("v", 0, "machine `VER`sion (required)")
	return func(args []string) error {
		if err := x.required("n", "v"); err != nil {
			return err
		}
		if err := x.nargs(args); err != nil {
			return err
		}
		res, def, sum, err := x.getMachine(*name, *ver)
		if err != nil {
			return err
		}
		if x.opts.json {
			x.printJSON(res)
			return nil
		}
		fmt.Fprintf(&x.out, "machine:  %s\nversion:  %d\nchecksum: %s\ninitial:  %s\nstates:   %s\n", *name, *ver, sum, def.Initial, strings.Join(def.States, ", "))
		if len(def.Meta) > 0 && string(def.Meta) != "null" {
			fmt.Fprintf(&x.out, "meta:     %s\n", cliCompact(def.Meta))
		}
		x.out.WriteString("transitions:\n")
		if len(def.Transitions) == 0 {
			x.out.WriteString("  (none)\n")
		}
		for _, t := range def.Transitions {
			fmt.Fprintf(&x.out, "  %s --%s--> %s", strings.Join(t.From, ","), t.Event, t.To)
			if t.After > 0 {
				fmt.Fprintf(&x.out, "  after %s", diagramDelay(t.After))
			}
			if t.Guard != "" {
				fmt.Fprintf(&x.out, "  [%s]", t.Guard)
			}
			x.out.WriteByte('\n')
		}
		return nil
	}
}

func cliListMachines(x *cliCmd) func([]string) error {
	return func(args []string) error {
		if err := x.nargs(args); err != nil {
			return err
		}
		return x.do("LIST_MACHINES", nil, func(res json.RawMessage) error {
			var r struct {
				Items []struct {
					Machine  string   `json:"machine"`
					Versions []uint32 `json:"versions"`
				} `json:"items"`
			}
			if err := json.Unmarshal(res, &r); err != nil {
				return err
			}
			rows := make([][]string, 0, len(r.Items))
			for _, it := range r.Items {
				vs := make([]string, len(it.Versions))
				for i, v := range it.Versions {
					vs[i] = strconv.FormatUint(uint64(v), 10)
				}
				rows = append(rows, []string{it.Machine, strings.Join(vs, ",")})
			}
			x.table([]string{"MACHINE", "VERSIONS"}, rows)
			fmt.Fprintf(&x.out, "(%s)\n", cliCount(len(rows), "machine"))
			return nil
		})
	}
}

func cliDescribeMachine(x *cliCmd) func([]string) error {
	format := x.fs.String("format", "mermaid", "diagram `FORMAT`: mermaid or dot")
	return func(args []string) error {
		if err := x.nargs(args, "NAME", "VER"); err != nil {
			return err
		}
		ver, err := strconv.ParseUint(args[1], 10, 32)
		if err != nil || ver == 0 {
			return cliUsagef("VER: want a version number of 1 or more, got %q", args[1])
		}
		var render func(name string, ver uint, def *cliMachineDef) string
		switch *format {
		case "mermaid":
			render = diagramMermaid
		case "dot":
			render = diagramDot
		default:
			return cliUsagef("--format: want mermaid or dot, got %q", *format)
		}
		_, def, _, err := x.getMachine(args[0], uint(ver))
		if err != nil {
			return err
		}
		text := render(args[0], uint(ver), def)
		if x.opts.json {
			x.printJSON([]byte(cliMarshal(map[string]string{"format": *format, "diagram": text})))
			return nil
		}
		x.out.WriteString(text)
		return nil
	}
}
