package main

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// frameFuzzSplitReader hands out its two parts in separate Reads.
type frameFuzzSplitReader struct {
	parts [2][]byte
	i     int
}

func (r *frameFuzzSplitReader) Read(p []byte) (int, error) {
	for r.i < len(r.parts) && len(r.parts[r.i]) == 0 {
		r.i++
	}
	if r.i == len(r.parts) {
		return 0, io.EOF
	}
	n := copy(p, r.parts[r.i])
	r.parts[r.i] = r.parts[r.i][n:]
	return n, nil
}

// FuzzFrame feeds arbitrary bytes, split in two Reads at split (modulo the
// length), and optionally switches the mode after flip payloads (flip 0:
// never). The reader must not panic, must return only payloads within the
// limit, must report only the documented errors, and every accepted payload
// must survive appendFrame and a fresh decode in the same mode.
func FuzzFrame(f *testing.F) {
	ping := []byte(frameTestPing)
	f.Add(appendFrame(nil, modeBinary, ping), uint16(0), uint8(0))
	f.Add(appendFrame(nil, modeBinary, ping), uint16(9), uint8(0))
	f.Add(appendFrame(appendFrame(nil, modeBinary, ping), modeBinary, []byte("{}")), uint16(70), uint8(0))
	f.Add(appendFrame(appendFrame(nil, modeBinary, ping), modeJSONL, []byte("{}")), uint16(30), uint8(1))
	f.Add([]byte(frameTestPing+"\n{}\r\n\n[1]\n"), uint16(5), uint8(0))
	f.Add([]byte("{}\nRCPX\n"), uint16(3), uint8(1))
	f.Add(frameTestRaw("RCPX", 1, 1, 3, 2, -1, "ext", "{}"), uint16(20), uint8(0))
	f.Add(frameTestRaw("RCPX", 1, 0, 0, 2, 7, "", "{}"), uint16(1), uint8(0))
	f.Add(frameTestRaw("RCPX", 1, 1, 0, 2, 7, "", "{}"), uint16(1), uint8(0))
	f.Add(frameTestRaw("RCPX", 2, 1, 0, 2, -1, "", "{}"), uint16(4), uint8(0))
	f.Add(frameTestRaw("RCPX", 1, 0x10, 0, 2, -1, "", "{}"), uint16(4), uint8(0))
	f.Add(frameTestRaw("RCPX", 1, 1, 0, maxPayload+1, 0, "", ""), uint16(17), uint8(0))
	f.Add(frameTestRaw("RCPX", 1, 1, 0, maxPayload, 0, "", "{}"), uint16(17), uint8(0))
	f.Add(frameTestOK("\xff"), uint16(2), uint8(0))
	f.Add([]byte("{\xff}\n"), uint16(2), uint8(0))
	f.Add([]byte("RCPY"), uint16(2), uint8(0))
	f.Add([]byte{}, uint16(0), uint8(0))

	f.Fuzz(func(t *testing.T, data []byte, split uint16, flip uint8) {
		at := int(split) % (len(data) + 1)
		r := &frameFuzzSplitReader{parts: [2][]byte{data[:at:at], data[at:]}}
		got := frameFuzzDecode(t, r, len(data), flip)
		// Where the input is split must not change the outcome.
		whole := frameFuzzDecode(t, bytes.NewReader(data), len(data), flip)
		if !slices.Equal(got, whole) {
			t.Fatalf("split at %d: %q, whole: %q", at, got, whole)
		}
	})
}

// frameFuzzDecode reads r to its first error, checks every payload and
// returns the payloads followed by the error's description.
func frameFuzzDecode(t *testing.T, r io.Reader, size int, flip uint8) []string {
	t.Helper()
	var out []string
	fr := newFrameReader(r)
	for i := 0; ; i++ {
		if flip != 0 && i == int(flip) {
			fr.setMode(1 - fr.mode())
		}
		m := fr.mode()
		p, err := fr.next()
		if err != nil {
			frameFuzzCheckErr(t, err)
			return append(out, "error "+frameTestErr(err))
		}
		if len(p) > maxPayload {
			t.Fatalf("payload of %d bytes", len(p))
		}
		if cap(fr.buf) > frameMaxBuf {
			t.Fatalf("buffer of %d bytes", cap(fr.buf))
		}
		if i > size {
			t.Fatalf("%d payloads from %d bytes", i, size)
		}
		if i > 0 && fr.mode() != m {
			t.Fatalf("mode changed from %v to %v by itself", m, fr.mode())
		}
		m = fr.mode()
		out = append(out, m.String()+" "+string(p))
		enc := appendFrame(nil, m, p)
		fr2 := newFrameReader(bytes.NewReader(enc))
		fr2.setMode(m)
		p2, err := fr2.next()
		if err != nil {
			t.Fatalf("re-decoding %q in %v: %v", p, m, err)
		}
		if !bytes.Equal(p, p2) {
			t.Fatalf("re-decoded %q in %v as %q", p, m, p2)
		}
		if _, err := fr2.next(); err != io.EOF {
			t.Fatalf("re-decoding %q in %v: trailing %v", p, m, err)
		}
	}
}

func frameFuzzCheckErr(t *testing.T, err error) {
	t.Helper()
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return
	}
	var re *rcpError
	if !errors.As(err, &re) {
		t.Fatalf("unexpected error %T %v", err, err)
	}
	if re.Code != codeBadRequest && re.Code != codeUnsupportedProtocol {
		t.Fatalf("unexpected code %v", re)
	}
	if re.Message == "" {
		t.Fatalf("empty message")
	}
}
