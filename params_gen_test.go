package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Tests of the generated decoders in ops_gen.go (and so of the generator's
// output together with the helpers of params.go).

func paramTestPtr[T any](v T) *T { return &v }

func TestGenDecodePutMachine(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    PutMachineParams
		wantErr string
	}{
		{
			name: "ok",
			raw:  `{"machine":"m","version":1,"definition":{"states":[]},"checksum":"abc"}`,
			want: PutMachineParams{Machine: "m", Version: 1, Definition: json.RawMessage(`{"states":[]}`), Checksum: paramTestPtr("abc")},
		},
		{
			name: "definition any json, checksum null, unknown keys",
			raw:  `{"extra":{"x":[1]},"machine":"m","version":4294967295,"definition":[1],"checksum":null}`,
			want: PutMachineParams{Machine: "m", Version: 4294967295, Definition: json.RawMessage(`[1]`)},
		},
		{name: "null params", raw: `null`, wantErr: "BAD_REQUEST field=machine: missing required field 'machine'"},
		{name: "missing machine", raw: `{"version":1,"definition":{}}`, wantErr: "BAD_REQUEST field=machine: missing required field 'machine'"},
		{name: "machine null", raw: `{"machine":null,"version":1,"definition":{}}`, wantErr: "BAD_REQUEST field=machine: missing required field 'machine'"},
		{name: "machine number", raw: `{"machine":1,"version":1,"definition":{}}`, wantErr: "BAD_REQUEST field=machine: field 'machine' must be a string"},
		{name: "machine empty", raw: `{"machine":"","version":1,"definition":{}}`, wantErr: "BAD_REQUEST field=machine: field 'machine' must not be empty"},
		{name: "version float", raw: `{"machine":"m","version":1.0,"definition":{}}`, wantErr: "BAD_REQUEST field=version: field 'version' must be an integer"},
		{name: "version string", raw: `{"machine":"m","version":"1","definition":{}}`, wantErr: "BAD_REQUEST field=version: field 'version' must be an integer"},
		{name: "version zero", raw: `{"machine":"m","version":0,"definition":{}}`, wantErr: "BAD_REQUEST field=version: field 'version' must be >= 1"},
		{name: "version too big", raw: `{"machine":"m","version":4294967296,"definition":{}}`, wantErr: "BAD_REQUEST field=version: field 'version' must be an integer"},
		{name: "definition null", raw: `{"machine":"m","version":1,"definition":null}`, wantErr: "BAD_REQUEST field=definition: missing required field 'definition'"},
		{name: "checksum too long", raw: `{"machine":"m","version":1,"definition":{},"checksum":"` + strings.Repeat("a", 129) + `"}`, wantErr: "BAD_REQUEST field=checksum: field 'checksum' must be at most 128 bytes"},
		{name: "array params", raw: `[]`, wantErr: paramNotObject},
		{name: "string params", raw: `"x"`, wantErr: paramNotObject},
		{name: "malformed", raw: `{"machine":"m",`, wantErr: "BAD_REQUEST field=params: params is not valid JSON: unexpected end of input at offset 15"},
		{name: "malformed after bad field", raw: `{"version":"x","machine":}`, wantErr: "BAD_REQUEST field=params: params is not valid JSON: invalid character '}' at offset 25"},
		{name: "definition malformed", raw: `{"machine":"m","version":1,"definition":[1,]}`, wantErr: "BAD_REQUEST field=params: params is not valid JSON: invalid character ']' at offset 43"},
		{name: "definition bad utf8", raw: "{\"machine\":\"m\",\"version\":1,\"definition\":[\"\xff\"]}", wantErr: "BAD_REQUEST field=definition: field 'definition' must be valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p PutMachineParams
			err := decodePutMachineParams([]byte(tt.raw), &p)
			if diff := cmp.Diff(tt.wantErr, paramErrText(err)); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if err == nil {
				if diff := cmp.Diff(tt.want, p); diff != "" {
					t.Errorf("params (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestGenDecodeListInstances(t *testing.T) {
	tests := []struct {
		name    string
		raw     []byte
		want    ListInstancesParams
		wantErr string
	}{
		{name: "nil params", raw: nil, want: ListInstancesParams{Limit: 100}},
		{name: "empty params", raw: []byte{}, want: ListInstancesParams{Limit: 100}},
		{name: "null params", raw: []byte("null"), want: ListInstancesParams{Limit: 100}},
		{name: "null fields", raw: []byte(`{"machine":null,"limit":null,"offset":null}`), want: ListInstancesParams{Limit: 100}},
		{
			name: "all",
			raw:  []byte(`{"machine":"m","state":"","limit":1000,"offset":18446744073709551615}`),
			want: ListInstancesParams{Machine: paramTestPtr("m"), State: paramTestPtr(""), Limit: 1000, Offset: 18446744073709551615},
		},
		{name: "limit zero", raw: []byte(`{"limit":0}`), want: ListInstancesParams{Limit: 0}},
		{name: "limit too big", raw: []byte(`{"limit":1001}`), wantErr: "BAD_REQUEST field=limit: field 'limit' must be <= 1000"},
		{name: "limit exp", raw: []byte(`{"limit":1e2}`), wantErr: "BAD_REQUEST field=limit: field 'limit' must be an integer"},
		{name: "offset negative", raw: []byte(`{"offset":-1}`), wantErr: "BAD_REQUEST field=offset: field 'offset' must be an integer"},
		{name: "duplicate keys last wins", raw: []byte(`{"limit":5000,"limit":7}`), want: ListInstancesParams{Limit: 7}},
		{name: "duplicate keys last checked", raw: []byte(`{"limit":7,"limit":"x"}`), wantErr: "BAD_REQUEST field=limit: field 'limit' must be an integer"},
		{name: "escaped key", raw: []byte(`{"\u006cimit":3}`), want: ListInstancesParams{Limit: 3}},
		{name: "number params", raw: []byte(`5`), wantErr: paramNotObject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ListInstancesParams{Machine: paramTestPtr("stale"), Limit: 9}
			err := decodeListInstancesParams(tt.raw, &p)
			if diff := cmp.Diff(tt.wantErr, paramErrText(err)); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if err == nil {
				if diff := cmp.Diff(tt.want, p); diff != "" {
					t.Errorf("params (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestGenDecodeApplyEvent(t *testing.T) {
	raw := []byte(`{"instance_id":"i\u00e9","event":"go","payload":{"a":1},"expected_state":"s",` +
		`"expected_wal_offset":12,"event_id":"e","idempotency_key":"k","other":[{"x":"}"}]}`)
	var p ApplyEventParams
	if err := decodeApplyEventParams(raw, &p); err != nil {
		t.Fatal(err)
	}
	want := ApplyEventParams{
		InstanceID: "ié", Event: "go", Payload: json.RawMessage(`{"a":1}`), ExpectedState: paramTestPtr("s"),
		ExpectedWalOffset: paramTestPtr(uint64(12)), EventID: paramTestPtr("e"), IdempotencyKey: paramTestPtr("k"),
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
	// instance_id, event and payload are borrowed (ops.spec): they alias the
	// request unless decoding had to unescape. Everything else is a copy.
	for i := range raw {
		raw[i] = ' '
	}
	if string(p.Payload) != `       ` || p.Event != "  " {
		t.Errorf("borrowed fields do not alias the request: payload %q event %q", p.Payload, p.Event)
	}
	if p.InstanceID != "ié" || *p.ExpectedState != "s" || *p.EventID != "e" || *p.IdempotencyKey != "k" {
		t.Errorf("copied fields changed with the request: %+v", p)
	}

	for _, tc := range []struct{ raw, wantErr string }{
		{`{"instance_id":"i","event":"e","payload":[1]}`, "BAD_REQUEST field=payload: field 'payload' must be a JSON object"},
		{`{"instance_id":"i","event":"e","payload":"{}"}`, "BAD_REQUEST field=payload: field 'payload' must be a JSON object"},
		{`{"instance_id":"i","event":"e","payload":{"a":}}`, "BAD_REQUEST field=params: params is not valid JSON: invalid character '}' at offset 46"},
		{`{"instance_id":"i","event":"e","payload":{"a":"\x"}}`, "BAD_REQUEST field=params: params is not valid JSON: invalid escape at offset 47"},
		{`{"instance_id":"i","event":"e","payload":{"a":1}`, "BAD_REQUEST field=params: params is not valid JSON: unexpected end of input at offset 48"},
		{"{\"instance_id\":\"i\",\"event\":\"e\",\"payload\":{\"a\":\"\xff\"}}", "BAD_REQUEST field=payload: field 'payload' must be valid UTF-8"},
		{`{"instance_id":"i","event":""}`, "BAD_REQUEST field=event: field 'event' must not be empty"},
		{`{"instance_id":"i","event":"e","idempotency_key":""}`, "BAD_REQUEST field=idempotency_key: field 'idempotency_key' must not be empty"},
		{`{"instance_id":"i","event":"e","expected_wal_offset":1.5}`, "BAD_REQUEST field=expected_wal_offset: field 'expected_wal_offset' must be an integer"},
		{`{"instance_id":"\ud800","event":"e"}`, "BAD_REQUEST field=instance_id: field 'instance_id' must be valid UTF-8"},
		{`{"event":"e"}`, "BAD_REQUEST field=instance_id: missing required field 'instance_id'"},
	} {
		var p ApplyEventParams
		if diff := cmp.Diff(tc.wantErr, paramErrText(decodeApplyEventParams([]byte(tc.raw), &p))); diff != "" {
			t.Errorf("%s: error (-want +got):\n%s", tc.raw, diff)
		}
	}
}

func TestGenDecodeBatch(t *testing.T) {
	var p BatchParams
	if err := decodeBatchParams([]byte(`{"mode":"atomic","ops":[{"op":"PING"}, {"op":"X","params":{}}]}`), &p); err != nil {
		t.Fatal(err)
	}
	want := BatchParams{Mode: "atomic", Ops: []json.RawMessage{json.RawMessage(`{"op":"PING"}`), json.RawMessage(`{"op":"X","params":{}}`)}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
	if err := decodeBatchParams([]byte(`{"mode":"best_effort","ops":[]}`), &p); err != nil || p.Ops == nil || len(p.Ops) != 0 {
		t.Errorf("empty ops: %v, %#v", err, p.Ops)
	}
	for _, tc := range []struct{ raw, wantErr string }{
		{`{"mode":"fast","ops":[]}`, "BAD_REQUEST field=mode: field 'mode' must be one of: atomic, best_effort"},
		{`{"mode":"atomic","ops":{}}`, "BAD_REQUEST field=ops: field 'ops' must be an array"},
		{`{"mode":"atomic"}`, "BAD_REQUEST field=ops: missing required field 'ops'"},
		{`{"ops":[]}`, "BAD_REQUEST field=mode: missing required field 'mode'"},
	} {
		if diff := cmp.Diff(tc.wantErr, paramErrText(decodeBatchParams([]byte(tc.raw), &p))); diff != "" {
			t.Errorf("%s: error (-want +got):\n%s", tc.raw, diff)
		}
	}
}

func TestGenDecodeHello(t *testing.T) {
	var p HelloParams
	if err := decodeHelloParams([]byte(`{"protocol_version":1,"wire_modes":["json","cbor"],"features":[]}`), &p); err != nil {
		t.Fatal(err)
	}
	want := HelloParams{ProtocolVersion: 1, WireModes: []string{"json", "cbor"}, Features: []string{}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
	for _, tc := range []struct{ raw, wantErr string }{
		{`{"protocol_version":65536}`, "BAD_REQUEST field=protocol_version: field 'protocol_version' must be <= 65535"},
		{`{"protocol_version":1,"wire_modes":"json"}`, "BAD_REQUEST field=wire_modes: field 'wire_modes' must be an array of strings"},
		{`{"protocol_version":1,"wire_modes":["json",1]}`, "BAD_REQUEST field=wire_modes: field 'wire_modes' must be an array of strings"},
		{`{"protocol_version":1,"wire_modes":[` + strings.Repeat(`"a",`, 16) + `"a"]}`, "BAD_REQUEST field=wire_modes: field 'wire_modes' must have at most 16 items"},
		{`{"protocol_version":1,"client_name":true}`, "BAD_REQUEST field=client_name: field 'client_name' must be a string"},
	} {
		if diff := cmp.Diff(tc.wantErr, paramErrText(decodeHelloParams([]byte(tc.raw), &p))); diff != "" {
			t.Errorf("%s: error (-want +got):\n%s", tc.raw, diff)
		}
	}
}

func TestGenDecodeNoParams(t *testing.T) {
	var p PingParams
	for raw, wantErr := range map[string]string{
		``:                 "",
		`null`:             "",
		`{}`:               "",
		`{"anything":[1]}`: "",
		`[]`:               paramNotObject,
		`{"a":`:            "BAD_REQUEST field=params: params is not valid JSON: unexpected end of input at offset 5",
	} {
		if diff := cmp.Diff(wantErr, paramErrText(decodePingParams([]byte(raw), &p))); diff != "" {
			t.Errorf("%q: error (-want +got):\n%s", raw, diff)
		}
	}
}

func TestGenOpTable(t *testing.T) {
	for o := opCode(1); o <= numOps; o++ {
		name := o.String()
		got, ok := lookupOp(name)
		if !ok || got != o {
			t.Errorf("lookupOp(%q) = %v, %v; want %v", name, got, ok, o)
		}
		if opTable[o].doc == "" {
			t.Errorf("%v has no doc", o)
		}
	}
	if _, ok := lookupOp("apply_event"); ok {
		t.Error("lookupOp is not case-sensitive")
	}
	if got := opCode(0).String(); got != "opCode(0)" {
		t.Errorf("opCode(0).String() = %q", got)
	}
	if got := opTable[opApplyEvent].flags; got != flagWrite|flagBatchable {
		t.Errorf("APPLY_EVENT flags = %b", got)
	}
	if opTable[opHello].flags&flagPreAuth == 0 {
		t.Error("HELLO is not preauth")
	}
}

func BenchmarkGenDecodeApplyEvent(b *testing.B) {
	raw := []byte(`{"instance_id":"order-123","event":"pay","payload":{"amount":42,"currency":"EUR"},"expected_wal_offset":1234,"idempotency_key":"k-1"}`)
	b.ReportAllocs()
	for b.Loop() {
		var p ApplyEventParams
		if err := decodeApplyEventParams(raw, &p); err != nil {
			b.Fatal(err)
		}
	}
}
