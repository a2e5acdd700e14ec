package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const frameTestPing = `{"type":"request","id":"1","op":"PING","params":{}}`

// frameTestRaw builds a binary frame with every header field chosen by the
// caller; crc < 0 means "the correct CRC of payload".
func frameTestRaw(magic string, version, flags, extLen uint16, payloadLen uint32, crc int64, ext, payload string) []byte {
	b := []byte(magic)
	b = binary.BigEndian.AppendUint16(b, version)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, extLen)
	b = binary.BigEndian.AppendUint32(b, payloadLen)
	sum := uint32(crc)
	if crc < 0 {
		sum = crc32.Checksum([]byte(payload), crc32.MakeTable(crc32.Castagnoli))
	}
	b = binary.BigEndian.AppendUint32(b, sum)
	b = append(b, ext...)
	return append(b, payload...)
}

// frameTestOK is a well-formed binary frame for payload.
func frameTestOK(payload string) []byte {
	return frameTestRaw("RCPX", 1, 1, 0, uint32(len(payload)), -1, "", payload)
}

func frameTestCat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// frameTestErr names an error exactly: the io sentinels by identity, an
// *rcpError by code and message.
func frameTestErr(err error) string {
	var re *rcpError
	switch {
	case err == nil:
		return ""
	case err == io.EOF:
		return "io.EOF"
	case err == io.ErrUnexpectedEOF:
		return "io.ErrUnexpectedEOF"
	case errors.As(err, &re):
		return re.Code + ": " + re.Message
	}
	return "other: " + err.Error()
}

type frameTestResult struct {
	Payloads []string
	Err      string
	Modes    []wireMode // mode() after each payload
}

// frameTestDecode reads payloads until an error. switches[k] is applied
// with setMode after the k-th payload (0 = before the first read).
func frameTestDecode(t testing.TB, r io.Reader, switches map[int]wireMode) frameTestResult {
	t.Helper()
	fr := newFrameReader(r)
	var res frameTestResult
	for i := 0; ; i++ {
		if m, ok := switches[i]; ok {
			fr.setMode(m)
		}
		p, err := fr.next()
		if err != nil {
			res.Err = frameTestErr(err)
			if p != nil {
				t.Errorf("next returned a payload with error %v", err)
			}
			// Malformed input errors are sticky.
			if _, err2 := fr.next(); frameTestErr(err2) != res.Err {
				t.Errorf("second next after %q returned %q", res.Err, frameTestErr(err2))
			}
			return res
		}
		if len(p) > maxPayload {
			t.Fatalf("payload of %d bytes", len(p))
		}
		if cap(fr.buf) > frameMaxBuf {
			t.Fatalf("buffer of %d bytes", cap(fr.buf))
		}
		res.Payloads = append(res.Payloads, string(p))
		res.Modes = append(res.Modes, fr.mode())
	}
}

// frameTestFeeds are the ways a test input is handed to the reader.
var frameTestFeeds = []struct {
	name  string
	small bool // too slow for multi-MiB inputs
	wrap  func([]byte) io.Reader
}{
	{"whole", false, func(b []byte) io.Reader { return bytes.NewReader(b) }},
	{"one-byte", true, func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
	{"half", true, func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }},
	{"data-err", false, func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) }},
	{"chunks-7", true, func(b []byte) io.Reader { return &frameTestChunkReader{data: b, n: 7} }},
}

// frameTestChunkReader returns at most n bytes per Read.
type frameTestChunkReader struct {
	data []byte
	n    int
}

func (r *frameTestChunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.data)
	r.data = r.data[n:]
	return n, nil
}

type frameTestCase struct {
	name     string
	in       []byte
	switches map[int]wireMode
	want     frameTestResult
	big      bool
}

func frameTestBin(payloads ...string) []wireMode {
	m := make([]wireMode, len(payloads))
	return m
}

func frameTestRun(t *testing.T, tests []frameTestCase) {
	t.Helper()
	for _, tc := range tests {
		for _, feed := range frameTestFeeds {
			if tc.big && feed.small {
				continue
			}
			t.Run(tc.name+"/"+feed.name, func(t *testing.T) {
				got := frameTestDecode(t, feed.wrap(tc.in), tc.switches)
				if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("decode mismatch (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestFrameTestVector(t *testing.T) {
	got := appendFrame(nil, modeBinary, []byte(frameTestPing))
	want := "5243505800010001000000000033c32009c4" + hex.EncodeToString([]byte(frameTestPing))
	if diff := cmp.Diff(want, hex.EncodeToString(got)); diff != "" {
		t.Errorf("appendFrame (-want +got):\n%s", diff)
	}
	if len(frameTestPing) != 51 {
		t.Fatalf("test vector is %d bytes", len(frameTestPing))
	}
	// Castagnoli check value.
	if c := crc32.Checksum([]byte("123456789"), frameCRCTable); c != 0xE3069283 {
		t.Errorf("crc32c check value %#x", c)
	}
	res := frameTestDecode(t, bytes.NewReader(got), nil)
	if diff := cmp.Diff(frameTestResult{Payloads: []string{frameTestPing}, Modes: []wireMode{modeBinary}, Err: "io.EOF"}, res); diff != "" {
		t.Errorf("decode (-want +got):\n%s", diff)
	}
}

func TestFrameAppend(t *testing.T) {
	tests := []struct {
		name    string
		dst     string
		mode    wireMode
		payload string
		want    string
	}{
		{"jsonl", "", modeJSONL, `{"a":1}`, "{\"a\":1}\n"},
		{"jsonl appends", "x", modeJSONL, `{}`, "x{}\n"},
		{"binary empty", "", modeBinary, "", string(frameTestRaw("RCPX", 1, 1, 0, 0, 0, "", ""))},
		{"binary appends", "ab", modeBinary, "{}", "ab" + string(frameTestOK("{}"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := appendFrame([]byte(tc.dst), tc.mode, []byte(tc.payload))
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestWireModeString(t *testing.T) {
	got := []string{modeBinary.String(), modeJSONL.String(), wireMode(7).String()}
	if diff := cmp.Diff([]string{"binary_json", "jsonl", "wireMode(7)"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFrameBinary(t *testing.T) {
	bin := func(p ...string) frameTestResult {
		return frameTestResult{Payloads: p, Modes: frameTestBin(p...)}
	}
	withErr := func(r frameTestResult, err string) frameTestResult {
		r.Err = err
		return r
	}
	many := make([][]byte, 100)
	var manyWant []string
	for i := range many {
		p := fmt.Sprintf(`{"type":"request","id":"%d","op":"PING"}`, i)
		many[i] = frameTestOK(p)
		manyWant = append(manyWant, p)
	}
	tests := []frameTestCase{
		{name: "empty input", in: nil, want: withErr(bin(), "io.EOF")},
		{name: "one frame", in: frameTestOK(frameTestPing), want: withErr(bin(frameTestPing), "io.EOF")},
		{name: "coalesced", in: frameTestCat(many...), want: withErr(bin(manyWant...), "io.EOF")},
		{name: "empty payload", in: frameTestOK(""), want: withErr(bin(""), "io.EOF")},
		{name: "non-ASCII payload", in: frameTestOK(`{"k":"żółw ☃ 🐢"}`), want: withErr(bin(`{"k":"żółw ☃ 🐢"}`), "io.EOF")},
		{name: "payload starting with brace in binary mode", in: frameTestCat(frameTestOK("{"), frameTestOK("}\n")), want: withErr(bin("{", "}\n"), "io.EOF")},
		{name: "bad magic", in: frameTestRaw("RCPY", 1, 1, 0, 2, -1, "", "{}"), want: withErr(bin(), "BAD_REQUEST: bad frame magic")},
		{name: "bad magic after good frame", in: frameTestCat(frameTestOK("{}"), []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), want: withErr(bin("{}"), "BAD_REQUEST: bad frame magic")},
		{name: "version 0", in: frameTestRaw("RCPX", 0, 1, 0, 2, -1, "", "{}"), want: withErr(bin(), "UNSUPPORTED_PROTOCOL: unsupported protocol version 0")},
		{name: "version 2", in: frameTestRaw("RCPX", 2, 1, 0, 2, -1, "", "{}"), want: withErr(bin(), "UNSUPPORTED_PROTOCOL: unsupported protocol version 2")},
		{name: "version 65535", in: frameTestRaw("RCPX", 0xFFFF, 1, 0, 2, -1, "", "{}"), want: withErr(bin(), "UNSUPPORTED_PROTOCOL: unsupported protocol version 65535")},
		{name: "version checked before flags", in: frameTestRaw("RCPX", 2, 0xFFFF, 0, 2, -1, "", "{}"), want: withErr(bin(), "UNSUPPORTED_PROTOCOL: unsupported protocol version 2")},
		{name: "magic checked before version", in: frameTestRaw("XXXX", 2, 0xFFFF, 0, 0xFFFFFFFF, -1, "", ""), want: withErr(bin(), "BAD_REQUEST: bad frame magic")},
		{name: "flags checked before length", in: frameTestRaw("RCPX", 1, 0x8000, 0, maxPayload+1, -1, "", ""), want: withErr(bin(), "BAD_REQUEST: reserved frame flags 0x8000")},
		{name: "all flags", in: frameTestRaw("RCPX", 1, 0xFFFF, 0, 2, -1, "", "{}"), want: withErr(bin(), "BAD_REQUEST: reserved frame flags 0xfff0")},
		{name: "no flags, correct crc", in: frameTestRaw("RCPX", 1, 0, 0, 2, -1, "", "{}"), want: withErr(bin("{}"), "io.EOF")},
		{name: "no crc flag, wrong crc accepted", in: frameTestRaw("RCPX", 1, 0, 0, 2, 12345, "", "{}"), want: withErr(bin("{}"), "io.EOF")},
		{name: "stream flags without crc, wrong crc accepted", in: frameTestRaw("RCPX", 1, 0xE, 0, 2, 0, "", "{}"), want: withErr(bin("{}"), "io.EOF")},
		{name: "crc mismatch", in: frameTestRaw("RCPX", 1, 1, 0, 2, 12345, "", "{}"), want: withErr(bin(), "BAD_REQUEST: frame CRC mismatch")},
		{name: "crc mismatch with all known flags", in: frameTestRaw("RCPX", 1, 0xF, 0, 2, 0, "", "{}"), want: withErr(bin(), "BAD_REQUEST: frame CRC mismatch")},
		{name: "crc mismatch after good frame", in: frameTestCat(frameTestOK("{}"), frameTestRaw("RCPX", 1, 1, 0, 2, 0, "", "[]")), want: withErr(bin("{}"), "BAD_REQUEST: frame CRC mismatch")},
		{name: "header extension skipped", in: frameTestCat(frameTestRaw("RCPX", 1, 1, 5, 2, -1, "\x00\xffab\n", "{}"), frameTestOK("[]")), want: withErr(bin("{}", "[]"), "io.EOF")},
		{name: "header extension only", in: frameTestRaw("RCPX", 1, 1, 3, 0, -1, "xyz", ""), want: withErr(bin(""), "io.EOF")},
		{name: "invalid UTF-8", in: frameTestOK("{\"a\":\"\xff\"}"), want: withErr(bin(), "BAD_REQUEST: payload is not valid UTF-8")},
		{name: "invalid UTF-8 surrogate", in: frameTestOK("\xed\xa0\x80"), want: withErr(bin(), "BAD_REQUEST: payload is not valid UTF-8")},
		{name: "crc checked before UTF-8", in: frameTestRaw("RCPX", 1, 1, 0, 1, 0, "", "\xff"), want: withErr(bin(), "BAD_REQUEST: frame CRC mismatch")},
		{name: "oversize", in: frameTestRaw("RCPX", 1, 1, 0, maxPayload+1, 0, "", ""), want: withErr(bin(), "BAD_REQUEST: frame payload of 16777217 bytes exceeds the 16777216-byte limit")},
		{name: "oversize max u32", in: frameTestRaw("RCPX", 1, 1, 0, 0xFFFFFFFF, 0, "", ""), want: withErr(bin(), "BAD_REQUEST: frame payload of 4294967295 bytes exceeds the 16777216-byte limit")},
		{name: "max size declared, truncated", in: frameTestRaw("RCPX", 1, 1, 0, maxPayload, 0, "", "{}"), want: withErr(bin(), "io.ErrUnexpectedEOF")},
		{name: "truncated header", in: frameTestOK("{}")[:10], want: withErr(bin(), "io.ErrUnexpectedEOF")},
		{name: "one byte", in: []byte("R"), want: withErr(bin(), "io.ErrUnexpectedEOF")},
		{name: "truncated header after frame", in: frameTestCat(frameTestOK("{}"), frameTestOK("{}")[:17]), want: withErr(bin("{}"), "io.ErrUnexpectedEOF")},
		{name: "truncated payload", in: frameTestOK(frameTestPing)[:40], want: withErr(bin(), "io.ErrUnexpectedEOF")},
		{name: "truncated extension", in: frameTestRaw("RCPX", 1, 1, 10, 2, -1, "abc", ""), want: withErr(bin(), "io.ErrUnexpectedEOF")},
		{name: "short bad magic", in: []byte("HELLO"), want: withErr(bin(), "io.ErrUnexpectedEOF")},
		{name: "newline first is binary", in: []byte("\n{\"type\":\"request\"}\n"), want: withErr(bin(), "BAD_REQUEST: bad frame magic")},
	}
	for bit := 4; bit < 16; bit++ {
		f := uint16(1) << bit
		tests = append(tests, frameTestCase{
			name: fmt.Sprintf("reserved flag bit %d", bit),
			in:   frameTestRaw("RCPX", 1, 1|f, 0, 2, -1, "", "{}"),
			want: withErr(bin(), fmt.Sprintf("BAD_REQUEST: reserved frame flags 0x%04x", f)),
		})
	}
	for _, f := range []uint16{0x2, 0x4, 0x8, 0xF} {
		tests = append(tests, frameTestCase{
			name: fmt.Sprintf("known flags %#x accepted", f),
			in:   frameTestRaw("RCPX", 1, f, 0, 2, -1, "", "{}"),
			want: withErr(bin("{}"), "io.EOF"),
		})
	}
	frameTestRun(t, tests)
}

func TestFrameBigPayloads(t *testing.T) {
	maxP := `"` + strings.Repeat("x", maxPayload-2) + `"`
	bigLine := strings.Repeat("y", maxPayload)
	bin := func(err string, p ...string) frameTestResult {
		return frameTestResult{Payloads: p, Modes: frameTestBin(p...), Err: err}
	}
	jl := func(err string, p ...string) frameTestResult {
		m := make([]wireMode, len(p))
		for i := range m {
			m[i] = modeJSONL
		}
		return frameTestResult{Payloads: p, Modes: m, Err: err}
	}
	tests := []frameTestCase{
		{name: "binary max payload", big: true, in: frameTestCat(frameTestOK(maxP), frameTestOK("{}")), want: bin("io.EOF", maxP, "{}")},
		{name: "binary max payload with extension", big: true, in: frameTestRaw("RCPX", 1, 1, 0xFFFF, maxPayload, -1, strings.Repeat("e", 0xFFFF), maxP), want: bin("io.EOF", maxP)},
		{name: "jsonl max line", big: true, in: []byte("{}\n" + bigLine + "\n{}\n"), want: jl("io.EOF", "{}", bigLine, "{}")},
		{name: "jsonl max line crlf", big: true, in: []byte("{}\r\n" + bigLine + "\r\n{}\r\n"), want: jl("io.EOF", "{}", bigLine, "{}")},
		{name: "jsonl over-long line", big: true, in: []byte("{}\n" + bigLine + "y\n{}\n"), want: jl("BAD_REQUEST: JSONL line exceeds the 16777216-byte limit", "{}")},
		{name: "jsonl over-long line with cr", big: true, in: []byte("{}\n" + bigLine + "y\r\n{}\n"), want: jl("BAD_REQUEST: JSONL line exceeds the 16777216-byte limit", "{}")},
		{name: "jsonl over-long unterminated", big: true, in: []byte("{" + bigLine + strings.Repeat("z", 1<<20)), want: jl("BAD_REQUEST: JSONL line exceeds the 16777216-byte limit")},
	}
	frameTestRun(t, tests)
}

func TestFrameJSONL(t *testing.T) {
	jl := func(err string, p ...string) frameTestResult {
		m := make([]wireMode, len(p))
		for i := range m {
			m[i] = modeJSONL
		}
		return frameTestResult{Payloads: p, Modes: m, Err: err}
	}
	var many strings.Builder
	var manyWant []string
	for i := range 200 {
		p := fmt.Sprintf(`{"type":"request","id":"%d","op":"PING"}`, i)
		many.WriteString(p + "\n")
		manyWant = append(manyWant, p)
	}
	tests := []frameTestCase{
		{name: "one line", in: []byte(frameTestPing + "\n"), want: jl("io.EOF", frameTestPing)},
		{name: "two lines", in: []byte("{\"a\":1}\n[2]\n"), want: jl("io.EOF", `{"a":1}`, "[2]")},
		{name: "coalesced", in: []byte(many.String()), want: jl("io.EOF", manyWant...)},
		{name: "crlf", in: []byte("{\"a\":1}\r\n{\"b\":2}\r\n"), want: jl("io.EOF", `{"a":1}`, `{"b":2}`)},
		{name: "extra trailing crs dropped", in: []byte("{}\r\r\n{} \r\n"), want: jl("io.EOF", "{}", "{} ")},
		{name: "cr inside kept", in: []byte("{\r}\n"), want: jl("io.EOF", "{\r}")},
		{name: "empty lines skipped", in: []byte("{}\n\n\r\n\n[]\n\n"), want: jl("io.EOF", "{}", "[]")},
		{name: "whitespace line returned", in: []byte("{}\n \n"), want: jl("io.EOF", "{}", " ")},
		{name: "unterminated last line", in: []byte("{}\n{\"a\""), want: jl("io.ErrUnexpectedEOF", "{}")},
		{name: "unterminated first line", in: []byte("{"), want: jl("io.ErrUnexpectedEOF")},
		{name: "trailing cr at eof", in: []byte("{}\n\r"), want: jl("io.ErrUnexpectedEOF", "{}")},
		{name: "invalid UTF-8", in: []byte("{}\n{\"a\":\"\xc3\x28\"}\n"), want: jl("BAD_REQUEST: payload is not valid UTF-8", "{}")},
		{name: "binary frame on a jsonl connection", in: frameTestCat([]byte("{}\n"), frameTestOK("{}")), want: jl("io.ErrUnexpectedEOF", "{}")},
	}
	frameTestRun(t, tests)
}

func TestFrameModeSwitch(t *testing.T) {
	tests := []frameTestCase{
		{
			name:     "binary then jsonl",
			in:       frameTestCat(frameTestOK(`{"op":"HELLO"}`), []byte("{\"a\":1}\r\n\n{\"b\":2}\n")),
			switches: map[int]wireMode{1: modeJSONL},
			want: frameTestResult{
				Payloads: []string{`{"op":"HELLO"}`, `{"a":1}`, `{"b":2}`},
				Modes:    []wireMode{modeBinary, modeJSONL, modeJSONL},
				Err:      "io.EOF",
			},
		},
		{
			name:     "binary, jsonl, binary again",
			in:       frameTestCat(frameTestOK("1"), []byte("2\n3\n"), frameTestOK("4"), frameTestOK("5")),
			switches: map[int]wireMode{1: modeJSONL, 3: modeBinary},
			want: frameTestResult{
				Payloads: []string{"1", "2", "3", "4", "5"},
				Modes:    []wireMode{modeBinary, modeJSONL, modeJSONL, modeBinary, modeBinary},
				Err:      "io.EOF",
			},
		},
		{
			name:     "jsonl line starting with R after switch",
			in:       frameTestCat(frameTestOK("1"), []byte("RCPX\n")),
			switches: map[int]wireMode{1: modeJSONL},
			want: frameTestResult{
				Payloads: []string{"1", "RCPX"},
				Modes:    []wireMode{modeBinary, modeJSONL},
				Err:      "io.EOF",
			},
		},
		{
			name:     "set jsonl before the first byte",
			in:       []byte("[1]\n"),
			switches: map[int]wireMode{0: modeJSONL},
			want:     frameTestResult{Payloads: []string{"[1]"}, Modes: []wireMode{modeJSONL}, Err: "io.EOF"},
		},
		{
			name:     "set binary before a brace",
			in:       []byte("{}\n"),
			switches: map[int]wireMode{0: modeBinary},
			want:     frameTestResult{Err: "io.ErrUnexpectedEOF"},
		},
		{
			name:     "binary garbage after switch to jsonl",
			in:       frameTestCat(frameTestOK("1"), frameTestOK("2\xff")),
			switches: map[int]wireMode{1: modeJSONL},
			want:     frameTestResult{Payloads: []string{"1"}, Modes: []wireMode{modeBinary}, Err: "io.ErrUnexpectedEOF"},
		},
	}
	frameTestRun(t, tests)
}

func TestFrameModeDetection(t *testing.T) {
	fr := newFrameReader(strings.NewReader("{}\n"))
	if fr.mode() != modeBinary {
		t.Errorf("mode before first byte = %v", fr.mode())
	}
	if _, err := fr.next(); err != nil {
		t.Fatal(err)
	}
	if fr.mode() != modeJSONL {
		t.Errorf("mode after brace = %v", fr.mode())
	}
	fr = newFrameReader(bytes.NewReader(frameTestOK("{}")))
	if _, err := fr.next(); err != nil || fr.mode() != modeBinary {
		t.Errorf("binary: err %v, mode %v", err, fr.mode())
	}
}

// frameTestStepReader replays a script of Read results.
type frameTestStepReader struct {
	steps []frameTestStep
}

type frameTestStep struct {
	data string
	err  error
}

func (r *frameTestStepReader) Read(p []byte) (int, error) {
	if len(r.steps) == 0 {
		return 0, io.EOF
	}
	s := r.steps[0]
	r.steps = r.steps[1:]
	return copy(p, s.data), s.err
}

func TestFrameReaderErrors(t *testing.T) {
	errTimeout := errors.New("i/o timeout")
	f := string(frameTestOK("{}"))
	r := &frameTestStepReader{steps: []frameTestStep{
		{f[:5], nil},
		{"", errTimeout},
		{f[5:] + f[:3], errTimeout}, // data and error together: data first
		{f[3:], nil},
		{"", nil},
		{f, io.EOF},
	}}
	fr := newFrameReader(r)
	var got []string
	for range 8 {
		p, err := fr.next()
		if err != nil {
			got = append(got, "err "+frameTestErr(err))
		} else {
			got = append(got, "payload "+string(p))
		}
	}
	want := []string{
		"err other: i/o timeout",
		"payload {}",
		"err other: i/o timeout",
		"payload {}",
		"payload {}",
		"err io.EOF",
		"err io.EOF",
		"err io.EOF",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// A reader that never makes progress.
	fr = newFrameReader(&frameTestStepReader{steps: make([]frameTestStep, 1000)})
	if _, err := fr.next(); err != io.ErrNoProgress {
		t.Errorf("no-progress reader: %v", err)
	}
}

func TestFrameResultNotAliased(t *testing.T) {
	// Appending to a returned payload must not overwrite the next frame.
	in := frameTestCat(frameTestOK("{}"), frameTestOK("[]"))
	fr := newFrameReader(bytes.NewReader(in))
	p, err := fr.next()
	if err != nil {
		t.Fatal(err)
	}
	_ = append(p, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"...)
	p, err = fr.next()
	if err != nil || string(p) != "[]" {
		t.Errorf("second payload %q, %v", p, err)
	}
}

// TestFrameMemory checks that the buffer follows the bytes received, not
// the length a header declares, and shrinks after a big frame.
func TestFrameMemory(t *testing.T) {
	t.Run("declared max, little sent", func(t *testing.T) {
		in := frameTestRaw("RCPX", 1, 1, 0, maxPayload, 0, "", strings.Repeat("a", 100))
		fr := newFrameReader(bytes.NewReader(in))
		if _, err := fr.next(); err != io.ErrUnexpectedEOF {
			t.Fatalf("err %v", err)
		}
		if cap(fr.buf) > frameBufSize {
			t.Errorf("buffer grew to %d bytes for a 100-byte partial frame", cap(fr.buf))
		}
	})
	t.Run("declared max, 1 MiB sent", func(t *testing.T) {
		in := frameTestRaw("RCPX", 1, 1, 0, maxPayload, 0, "", strings.Repeat("a", 1<<20))
		fr := newFrameReader(bytes.NewReader(in))
		if _, err := fr.next(); err != io.ErrUnexpectedEOF {
			t.Fatalf("err %v", err)
		}
		if cap(fr.buf) > 2<<20+2*frameHeaderLen {
			t.Errorf("buffer grew to %d bytes for a 1 MiB partial frame", cap(fr.buf))
		}
	})
	t.Run("grows to the frame size exactly", func(t *testing.T) {
		p := strings.Repeat("b", 100000)
		fr := newFrameReader(bytes.NewReader(frameTestOK(p)))
		if got, err := fr.next(); err != nil || string(got) != p {
			t.Fatalf("err %v", err)
		}
		if cap(fr.buf) != frameHeaderLen+len(p) {
			t.Errorf("buffer of %d bytes for a %d-byte frame", cap(fr.buf), frameHeaderLen+len(p))
		}
	})
	t.Run("shrinks after a big frame", func(t *testing.T) {
		big := strings.Repeat("c", 1<<20)
		in := frameTestCat(frameTestOK("{}"), frameTestOK(big), frameTestOK("[]"), frameTestOK("{}"))
		fr := newFrameReader(iotest.HalfReader(bytes.NewReader(in)))
		var caps []int
		for {
			_, err := fr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			caps = append(caps, cap(fr.buf))
		}
		if caps[1] < 1<<20 || caps[2] != frameBufSize || caps[3] != frameBufSize {
			t.Errorf("buffer sizes after each frame: %v", caps)
		}
	})
	t.Run("jsonl shrinks after a big line", func(t *testing.T) {
		in := "{}\n" + strings.Repeat("d", 1<<20) + "\n{}\n"
		fr := newFrameReader(strings.NewReader(in))
		var caps []int
		for {
			_, err := fr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			caps = append(caps, cap(fr.buf))
		}
		if caps[1] < 1<<20 || caps[2] != frameBufSize {
			t.Errorf("buffer sizes after each line: %v", caps)
		}
	})
}

// frameTestLoopReader returns data over and over, up to chunk bytes a Read.
type frameTestLoopReader struct {
	data  []byte
	off   int
	chunk int
}

func (r *frameTestLoopReader) Read(p []byte) (int, error) {
	if len(p) > r.chunk {
		p = p[:r.chunk]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.data[r.off:])
		n += c
		r.off = (r.off + c) % len(r.data)
	}
	return n, nil
}

func frameTestStream(m wireMode, payload []byte, count int) []byte {
	var b []byte
	for range count {
		b = appendFrame(b, m, payload)
	}
	return b
}

func TestFrameAllocs(t *testing.T) {
	payload := []byte(frameTestPing)
	for _, m := range []wireMode{modeBinary, modeJSONL} {
		for _, chunk := range []int{1 << 20, 1000, 7} {
			t.Run(fmt.Sprintf("next/%v/chunk-%d", m, chunk), func(t *testing.T) {
				fr := newFrameReader(&frameTestLoopReader{data: frameTestStream(m, payload, 13), chunk: chunk})
				var err error
				var p []byte
				allocs := testing.AllocsPerRun(1000, func() {
					p, err = fr.next()
				})
				if err != nil || string(p) != frameTestPing {
					t.Fatalf("next: %q, %v", p, err)
				}
				if allocs != 0 {
					t.Errorf("%v allocations per next", allocs)
				}
			})
		}
		t.Run(fmt.Sprintf("append/%v", m), func(t *testing.T) {
			dst := make([]byte, 0, 1024)
			allocs := testing.AllocsPerRun(1000, func() {
				dst = appendFrame(dst[:0], m, payload)
			})
			if allocs != 0 {
				t.Errorf("%v allocations per appendFrame", allocs)
			}
		})
	}
}

func BenchmarkFrameDecode(b *testing.B) {
	for _, m := range []wireMode{modeBinary, modeJSONL} {
		for _, size := range []int{51, 4096} {
			payload := []byte(frameTestPing)
			if size > len(payload) {
				payload = []byte(`{"x":"` + strings.Repeat("a", size-8) + `"}`)
			}
			b.Run(fmt.Sprintf("%v/%dB", m, len(payload)), func(b *testing.B) {
				fr := newFrameReader(&frameTestLoopReader{data: frameTestStream(m, payload, 64), chunk: 64 << 10})
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := fr.next(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkFrameEncode(b *testing.B) {
	for _, m := range []wireMode{modeBinary, modeJSONL} {
		for _, size := range []int{51, 4096} {
			payload := []byte(frameTestPing)
			if size > len(payload) {
				payload = []byte(`{"x":"` + strings.Repeat("a", size-8) + `"}`)
			}
			b.Run(fmt.Sprintf("%v/%dB", m, len(payload)), func(b *testing.B) {
				dst := make([]byte, 0, 2*size+64)
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				for b.Loop() {
					dst = appendFrame(dst[:0], m, payload)
				}
			})
		}
	}
}

// Large request buffers come out of one budget shared by all connections:
// a reader that cannot get budget in time fails with RATE_LIMITED, and a
// reader that finishes its big frame gives its share back.
func TestFrameBudget(t *testing.T) {
	old := frameBudgetWait
	frameBudgetWait = 50 * time.Millisecond
	defer func() { frameBudgetWait = old }()
	budget := newFrameBudget(1 << 20)
	big := appendFrame(nil, modeBinary, []byte(`{"pad":"`+strings.Repeat("x", 900<<10)+`"}`))
	a := newFrameReader(bytes.NewReader(append(append([]byte{}, big...), appendFrame(nil, modeBinary, []byte(`{}`))...)))
	a.budget = budget
	if _, err := a.next(); err != nil {
		t.Fatalf("first big frame within budget: %v", err)
	}
	// a holds the budget until its buffer shrinks (at its next frame).
	b := newFrameReader(bytes.NewReader(big))
	b.budget = budget
	var re *rcpError
	if _, err := b.next(); !errors.As(err, &re) || re.Code != codeRateLimited {
		t.Fatalf("second big frame over budget: %v", err)
	}
	if _, err := a.next(); err != nil {
		t.Fatal(err)
	}
	c := newFrameReader(bytes.NewReader(big))
	c.budget = budget
	if _, err := c.next(); err != nil {
		t.Fatalf("budget not returned after a's buffer shrank: %v", err)
	}
}
