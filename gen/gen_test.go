package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the generator's output")

// TestGolden runs the generator on testdata/*.spec and compares with the
// matching .golden file. Run `go test ./gen -update` to accept changes.
func TestGolden(t *testing.T) {
	specs, err := filepath.Glob("testdata/*.spec")
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) == 0 {
		t.Fatal("no testdata/*.spec files")
	}
	for _, specPath := range specs {
		name := strings.TrimSuffix(filepath.Base(specPath), ".spec")
		t.Run(name, func(t *testing.T) {
			spec, err := os.ReadFile(specPath)
			if err != nil {
				t.Fatal(err)
			}
			got, err := generate(spec)
			if err != nil {
				t.Fatalf("generate: %v", err)
			}
			goldenPath := strings.TrimSuffix(specPath, ".spec") + ".golden"
			if *update {
				if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test ./gen -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got); run go test ./gen -update if intended:\n%s", goldenPath, diff)
			}
		})
	}
}

// TestStale checks that the committed ops_gen.go is what the generator
// makes from ops.spec.
func TestStale(t *testing.T) {
	spec, err := os.ReadFile("../ops.spec")
	if err != nil {
		t.Fatal(err)
	}
	want, err := generate(spec)
	if err != nil {
		t.Fatalf("generate ../ops.spec: %v", err)
	}
	got, err := os.ReadFile("../ops_gen.go")
	if err != nil {
		t.Fatalf("ops_gen.go is stale: run go generate (%v)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("ops_gen.go is stale: run go generate\n(-generated +ops_gen.go):\n%s", diff)
	}
}

func TestDeterministic(t *testing.T) {
	spec, err := os.ReadFile("testdata/all_types.spec")
	if err != nil {
		t.Fatal(err)
	}
	first, err := generate(spec)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := generate(spec)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(first) {
			t.Fatal("generate is not deterministic")
		}
	}
}

func TestGoName(t *testing.T) {
	for in, want := range map[string]string{
		"instance_id":         "InstanceID",
		"expected_wal_offset": "ExpectedWalOffset",
		"initial_ctx":         "InitialCtx",
		"protocol_version":    "ProtocolVersion",
		"id":                  "ID",
		"id_map":              "IDMap",
		"idempotency_key":     "IdempotencyKey",
		"v2_mode":             "V2Mode",
		"APPLY_EVENT":         "ApplyEvent",
		"GET_BY_ID":           "GetByID",
		"PING":                "Ping",
	} {
		if got := goName(in); got != want {
			t.Errorf("goName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSpecErrors feeds broken specs to generate; each must fail with every
// listed message, which includes the line number.
func TestSpecErrors(t *testing.T) {
	const ok = "op OK handler=handleOK flags=read\n  doc Fine.\n"
	tests := []struct {
		name string
		spec string
		want []string
	}{
		{"empty", "# nothing\n", []string{"line 1: no ops"}},
		{"unknown directive", ok + "  parm x string\n", []string{"line 3: unknown directive \"parm\""}},
		{"param outside op", "param x string\n" + ok, []string{"line 1: param outside of an op"}},
		{"doc outside op", "doc Hi.\n" + ok, []string{"line 1: doc outside of an op"}},
		{"empty doc", "op A handler=h flags=read\n  doc\n", []string{"line 2: empty doc for op A"}},
		{"duplicate doc", ok + "  doc Again.\n", []string{"line 3: duplicate doc for op OK (first at line 2)"}},
		{"op without name", "op\n", []string{"line 1: op without a name"}},
		{"bad op name", "op apply handler=h flags=read\n", []string{"line 1: invalid op name \"apply\""}},
		{"bad op name underscores", "op A__B handler=h flags=read\n", []string{"line 1: invalid op name \"A__B\""}},
		{"missing handler", "op A flags=read\n", []string{"line 1: op A has no handler="}},
		{"empty handler", "op A handler= flags=read\n", []string{"line 1: op A: invalid handler \"\"", "line 1: op A has no handler="}},
		{"bad handler", "op A handler=1h flags=read\n", []string{"line 1: op A: invalid handler \"1h\""}},
		{"keyword handler", "op A handler=func flags=read\n", []string{"line 1: op A: invalid handler \"func\""}},
		{"missing flags", "op A handler=h\n", []string{"line 1: op A has no flags="}},
		{"unknown flag", "op A handler=h flags=read,fast\n", []string{"line 1: op A: unknown flag \"fast\""}},
		{"empty flag", "op A handler=h flags=read,\n", []string{"line 1: op A: unknown flag \"\""}},
		{"duplicate flag", "op A handler=h flags=read,read\n", []string{"line 1: op A: duplicate flag \"read\""}},
		{"duplicate handler attr", "op A handler=h handler=g flags=read\n", []string{"line 1: op A: duplicate handler="}},
		{"unknown op attr", "op A handler=h flags=read doc=x\n", []string{"line 1: op A: unknown attribute \"doc\""}},
		{"bare word on op", "op A handler=h flags=read fast\n", []string{"line 1: op A: unexpected \"fast\""}},
		{"duplicate op", ok + "op OK handler=handleOther flags=read\n", []string{"line 3: duplicate op OK (first at line 1)"}},
		{"duplicate handler", ok + "op B handler=handleOK flags=read\n", []string{"line 3: op B: handler handleOK is already used by op OK"}},
		{"clashing op name", "op TABLE handler=h flags=read\n", []string{"line 1: op TABLE: its constant opTable would clash"}},
		{"same go op name", "op A_ID handler=h flags=read\nop A_I_D handler=g flags=read\n", []string{"line 2: op A_I_D has the same Go name AID as op A_ID"}},
		{"param without type", ok + "  param x\n", []string{"line 3: param needs a name and a type"}},
		{"bad param name", ok + "  param X string\n", []string{"line 3: param X: invalid name"}},
		{"bad param name dash", ok + "  param a-b string\n", []string{"line 3: param a-b: invalid name"}},
		{"unknown type", ok + "  param x int\n", []string{"line 3: param x: unknown type \"int\""}},
		{"unknown type list", ok + "  param x []u32\n", []string{"line 3: param x: unknown type \"[]u32\""}},
		{"duplicate param", ok + "  param x string\n  param y bool\n  param x u32\n", []string{"line 5: duplicate param x in op OK (first at line 3)"}},
		{"same go field name", ok + "  param a_id string\n  param a_i_d string\n", []string{"line 4: param a_i_d in op OK has the same Go name AID as param a_id"}},
		{"unknown param attr", ok + "  param x string optional\n", []string{"line 3: param x: unknown attribute \"optional\""}},
		{"unknown param kv", ok + "  param x string len=3\n", []string{"line 3: param x: unknown attribute \"len=3\""}},
		{"required with value", ok + "  param x string required=true\n", []string{"line 3: param x: unknown attribute \"required=true\""}},
		{"duplicate param attr", ok + "  param x string max=1 max=2\n", []string{"line 3: param x: duplicate max"}},
		{"required and default", ok + "  param x string required default=a\n", []string{"line 3: param x: required together with default"}},
		{"bad min", ok + "  param x u32 min=-1\n", []string{"line 3: param x: min=-1 is not a non-negative integer"}},
		{"bad max", ok + "  param x string max=lots\n", []string{"line 3: param x: max=lots is not a non-negative integer"}},
		{"min on bool", ok + "  param x bool min=1\n", []string{"line 3: param x: min/max are not supported for type bool"}},
		{"max on json", ok + "  param x json max=1\n", []string{"line 3: param x: min/max are not supported for type json"}},
		{"max on object", ok + "  param x object max=1\n", []string{"line 3: param x: min/max are not supported for type object"}},
		{"max too big for u32", ok + "  param x u32 max=4294967296\n", []string{"line 3: param x: max=4294967296 is out of range for type u32"}},
		{"min greater than max", ok + "  param x u64 min=5 max=4\n", []string{"line 3: param x: min=5 is greater than max=4"}},
		{"enum on u32", ok + "  param x u32 enum=1|2\n", []string{"line 3: param x: enum is only supported for type string, not u32"}},
		{"borrow on u64", ok + "  param x u64 borrow\n", []string{"line 3: param x: borrow is only supported for types string, json and object, not u64"}},
		{"borrow on list", ok + "  param x []string borrow\n", []string{"line 3: param x: borrow is only supported for types string, json and object, not []string"}},
		{"enum on list", ok + "  param x []string enum=a|b\n", []string{"line 3: param x: enum is only supported for type string, not []string"}},
		{"empty enum value", ok + "  param x string enum=a||b\n", []string{"line 3: param x: empty enum value"}},
		{"duplicate enum value", ok + "  param x string enum=a|b|a\n", []string{"line 3: param x: duplicate enum value \"a\""}},
		{"enum value too long", ok + "  param x string max=3 enum=abcd|b\n", []string{"line 3: param x: enum value \"abcd\" is longer than max=3"}},
		{"bad default u32", ok + "  param x u32 default=abc\n", []string{"line 3: param x: default=abc is not a u32"}},
		{"float default u32", ok + "  param x u32 default=1.0\n", []string{"line 3: param x: default=1.0 is not a u32"}},
		{"negative default u64", ok + "  param x u64 default=-1\n", []string{"line 3: param x: default=-1 is not a u64"}},
		{"plus default u64", ok + "  param x u64 default=+1\n", []string{"line 3: param x: default=+1 is not a u64"}},
		{"leading zero default", ok + "  param x u32 default=01\n", []string{"line 3: param x: default=01 is not a u32"}},
		{"overflow default u32", ok + "  param x u32 default=4294967296\n", []string{"line 3: param x: default=4294967296 is not a u32"}},
		{"default above max", ok + "  param x u32 default=11 max=10\n", []string{"line 3: param x: default=11 is greater than max=10"}},
		{"default below min", ok + "  param x u64 default=1 min=2\n", []string{"line 3: param x: default=1 is less than min=2"}},
		{"bad default bool", ok + "  param x bool default=yes\n", []string{"line 3: param x: default=yes is not a bool"}},
		{"default not in enum", ok + "  param x string default=c enum=a|b\n", []string{"line 3: param x: default=c is not one of the enum values"}},
		{"default too long", ok + "  param x string default=abc max=2\n", []string{"line 3: param x: default=abc is longer than max=2"}},
		{"default empty with min", ok + "  param x string default= min=1\n", []string{"line 3: param x: default= is shorter than min=1"}},
		{"default on json", ok + "  param x json default={}\n", []string{"line 3: param x: default={} is not supported for type json"}},
		{"default on list", ok + "  param x []string default=a\n", []string{"line 3: param x: default=a is not supported for type []string"}},
		{
			"several errors in line order",
			"op A flags=read\n  param x int\nop B handler=h flags=nope\n",
			[]string{"line 1: op A has no handler=\nline 2: param x: unknown type \"int\"\nline 3: op B: unknown flag \"nope\""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := generate([]byte(tt.spec))
			if err == nil {
				t.Fatalf("generate succeeded, want errors %q; output:\n%s", tt.want, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestSpecAccepted checks specs that must generate.
func TestSpecAccepted(t *testing.T) {
	for name, spec := range map[string]string{
		"comments and blank lines": "\n# c\n  # indented comment\nop A handler=h flags=read # trailing\n\n  doc Text with # comment\n",
		"hash inside word":         "op A handler=h flags=read\n  doc See issue#3.\n",
		"no doc":                   "op A handler=h flags=read\n",
		"crlf":                     "op A handler=h flags=read\r\n  doc D.\r\n  param x string\r\n",
		"tabs":                     "op A\thandler=h\tflags=read\n\tparam\tx\tu32\tmax=3\n",
		"empty string default":     "op A handler=h flags=read\n  param x string default=\n",
		"zero max string":          "op A handler=h flags=read\n  param x string max=0\n",
	} {
		if _, err := generate([]byte(spec)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCommentStripped(t *testing.T) {
	out, err := generate([]byte("op A handler=h flags=read\n  doc Keep issue#3 # but not this\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `doc: "Keep issue#3"`) {
		t.Errorf("doc not as expected in:\n%s", out)
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	specPath := filepath.Join(dir, "ops.spec")
	outPath := filepath.Join(dir, "ops_gen.go")
	if err := os.WriteFile(specPath, []byte("op A handler=h flags=read\n  param x string\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(specPath, outPath); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(outPath); err != nil || !strings.HasPrefix(string(b), "// Code generated by \"go run ./gen\"; DO NOT EDIT.\n\npackage main\n") {
		t.Fatalf("output: %v\n%s", err, b)
	}
	if err := os.WriteFile(specPath, []byte("op A handler=h flags=read\n  param x int\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(specPath, outPath)
	if err == nil || !strings.Contains(err.Error(), specPath+":2: param x: unknown type") {
		t.Errorf("run error = %v, want file:line prefix", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// TestStaleOpenAPI checks that the committed console/openapi.json is what
// the generator makes from ops.spec.
func TestStaleOpenAPI(t *testing.T) {
	spec, err := os.ReadFile("../ops.spec")
	if err != nil {
		t.Fatal(err)
	}
	want, err := generateOpenAPI(spec)
	if err != nil {
		t.Fatalf("generateOpenAPI ../ops.spec: %v", err)
	}
	got, err := os.ReadFile("../console/openapi.json")
	if err != nil {
		t.Fatalf("console/openapi.json is stale: run go generate (%v)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("console/openapi.json is stale: run go generate\n(-generated +console/openapi.json):\n%s", diff)
	}
}
