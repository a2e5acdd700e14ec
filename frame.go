package main

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// RCP wire framing.
//
// Binary (RCPX) frame: an 18-byte big-endian header
//
//	magic "RCPX" (4) | version u16 | flags u16 | header_len u16 | payload_len u32 | crc32c u32
//
// followed by header_len bytes of opaque extension (skipped) and payload_len
// bytes of payload. The CRC (Castagnoli) covers the payload only and is
// checked only when the CRC_PRESENT flag is set.
//
// JSONL: one JSON object per '\n'-terminated line.
//
// A connection whose first byte is '{' is JSONL; otherwise it is binary until
// the server switches it with setMode.

// maxPayload is the largest payload of a frame or JSONL line, inclusive.
const maxPayload = 16 << 20

const (
	frameHeaderLen = 18
	frameVersion   = 1

	frameFlagCRC       = 0x0001 // CRC_PRESENT
	frameFlagCompress  = 0x0002 // COMPRESSED (reserved; accepted, no effect)
	frameFlagStream    = 0x0004 // STREAM (accepted, no effect)
	frameFlagEndStream = 0x0008 // END_STREAM (accepted, no effect)
	frameFlagsKnown    = frameFlagCRC | frameFlagCompress | frameFlagStream | frameFlagEndStream

	// frameBufSize is the initial read buffer of a connection and the size
	// it shrinks back to.
	frameBufSize = 16 << 10
	// frameBufKeep is the largest buffer kept between frames; a buffer that
	// grew beyond it for one big frame is replaced by a small one afterwards.
	frameBufKeep = 64 << 10
	// frameMaxLine is the most a JSONL line may take in the buffer: the
	// payload limit plus a "\r\n" terminator.
	frameMaxLine = maxPayload + 2
	// frameMaxBuf bounds the read buffer: the largest possible binary frame.
	frameMaxBuf = frameHeaderLen + 0xFFFF + maxPayload
	// frameMaxEmptyReads is how many (0, nil) reads in a row are tolerated.
	frameMaxEmptyReads = 100
)

var frameMagic = [4]byte{'R', 'C', 'P', 'X'}

var frameCRCTable = crc32.MakeTable(crc32.Castagnoli)

// wireMode is the framing of a connection.
type wireMode uint8

const (
	modeBinary wireMode = iota
	modeJSONL
)

// String returns the name used in HELLO wire_modes.
func (m wireMode) String() string {
	switch m {
	case modeBinary:
		return "binary_json"
	case modeJSONL:
		return "jsonl"
	}
	return "wireMode(" + strconv.Itoa(int(m)) + ")"
}

// frameReader reads request payloads from a connection with one reusable
// buffer. The unread bytes are buf[rpos:wpos]; len(buf) == cap(buf).
type frameReader struct {
	limit   int          // 0: maxPayload
	budget  *frameBudget // nil: no shared bound on big buffers
	held    int          // bytes of budget this reader holds
	r       io.Reader
	buf     []byte
	rpos    int
	wpos    int
	scan    int      // JSONL: bytes after rpos already known to hold no '\n'
	m       wireMode // current mode
	decided bool     // the mode is fixed (first byte seen, or setMode called)
	err     error    // sticky error for malformed input
	rerr    error    // error from the reader not yet reported
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: r}
}

// setMode switches the framing; it applies from the next call to next, to
// bytes already buffered too.
func (fr *frameReader) setMode(m wireMode) {
	fr.m = m
	fr.decided = true
	fr.scan = 0
}

// mode reports the current framing: modeBinary until the first byte
// decides otherwise.
func (fr *frameReader) mode() wireMode { return fr.m }

// buffered is how many bytes were read from the connection and not yet
// returned by next.
func (fr *frameReader) buffered() int { return fr.wpos - fr.rpos }

// next returns the next payload. The slice is valid until the next call.
//
// Errors: io.EOF at a clean frame boundary (including before the first
// byte); io.ErrUnexpectedEOF when the stream ends inside a frame; *rcpError
// with code BAD_REQUEST or UNSUPPORTED_PROTOCOL for malformed input (the
// caller sends it and closes; later calls return it again); any other error
// comes from the reader.
func (fr *frameReader) next() ([]byte, error) {
	if fr.err != nil {
		return nil, fr.err
	}
	fr.maybeShrink()
	if !fr.decided {
		if err := fr.fill(1, frameBufSize); err != nil {
			return nil, err
		}
		if fr.buf[fr.rpos] == '{' {
			fr.m = modeJSONL
		}
		fr.decided = true
	}
	var p []byte
	var err error
	if fr.m == modeJSONL {
		p, err = fr.nextLine()
	} else {
		p, err = fr.nextFrame()
	}
	if e, ok := err.(*rcpError); ok {
		fr.err = e
	}
	return p, err
}

// nextFrame decodes one RCPX frame.
func (fr *frameReader) nextFrame() ([]byte, error) {
	if err := fr.fill(frameHeaderLen, frameHeaderLen); err != nil {
		return nil, err
	}
	h := fr.buf[fr.rpos : fr.rpos+frameHeaderLen]
	if [4]byte(h[0:4]) != frameMagic {
		return nil, newError(codeBadRequest, "bad frame magic")
	}
	if v := binary.BigEndian.Uint16(h[4:6]); v != frameVersion {
		return nil, newError(codeUnsupportedProtocol, "unsupported protocol version %d", v)
	}
	flags := binary.BigEndian.Uint16(h[6:8])
	if bad := flags &^ frameFlagsKnown; bad != 0 {
		return nil, newError(codeBadRequest, "reserved frame flags 0x%04x", bad)
	}
	extLen := int(binary.BigEndian.Uint16(h[8:10]))
	payloadLen := binary.BigEndian.Uint32(h[10:14])
	if int64(payloadLen) > int64(fr.maxLen()) {
		return nil, newError(codeBadRequest, "frame payload of %d bytes exceeds the %d-byte limit", payloadLen, fr.maxLen())
	}
	sum := binary.BigEndian.Uint32(h[14:18])
	// At most frameMaxBuf: no overflow, even with a 32-bit int.
	total := frameHeaderLen + extLen + int(payloadLen)
	if err := fr.fill(total, total); err != nil {
		return nil, err
	}
	start := fr.rpos + frameHeaderLen + extLen
	end := fr.rpos + total
	p := fr.buf[start:end:end]
	if flags&frameFlagCRC != 0 && crc32.Checksum(p, frameCRCTable) != sum {
		return nil, newError(codeBadRequest, "frame CRC mismatch")
	}
	if !utf8.Valid(p) {
		return nil, newError(codeBadRequest, "payload is not valid UTF-8")
	}
	fr.consume(total)
	return p, nil
}

// nextLine returns the next non-empty JSONL line without its terminator.
func (fr *frameReader) nextLine() ([]byte, error) {
	for {
		i := bytes.IndexByte(fr.buf[fr.rpos+fr.scan:fr.wpos], '\n')
		if i < 0 {
			fr.scan = fr.wpos - fr.rpos
			if fr.scan >= frameMaxLine {
				return nil, fr.lineTooLong()
			}
			if err := fr.fill(fr.scan+1, frameMaxLine); err != nil {
				return nil, err
			}
			continue
		}
		n := fr.scan + i // line length without '\n'
		line := fr.buf[fr.rpos : fr.rpos+n]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) > fr.maxLen() {
			return nil, fr.lineTooLong()
		}
		// Further trailing CRs are JSON whitespace; dropping them keeps
		// every accepted line re-encodable as payload + "\n".
		for len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		fr.consume(n + 1)
		if len(line) == 0 {
			continue
		}
		if !utf8.Valid(line) {
			return nil, newError(codeBadRequest, "payload is not valid UTF-8")
		}
		return line[:len(line):len(line)], nil
	}
}

func (fr *frameReader) lineTooLong() error {
	return newError(codeBadRequest, "JSONL line exceeds the %d-byte limit", fr.maxLen())
}

// setLimit lowers the largest payload accepted (limits.max_frame_bytes);
// it never raises it above maxPayload.
func (fr *frameReader) setLimit(n int) {
	if n > 0 && n < maxPayload {
		fr.limit = n
	}
}

func (fr *frameReader) maxLen() int {
	if fr.limit > 0 {
		return fr.limit
	}
	return maxPayload
}

// consume drops n bytes from the front of the unread data.
func (fr *frameReader) consume(n int) {
	fr.rpos += n
	fr.scan = 0
	if fr.rpos == fr.wpos {
		fr.rpos, fr.wpos = 0, 0
	}
}

// fill makes at least need bytes available in buf[rpos:wpos], growing the
// buffer to at most limit (>= need) bytes. It returns io.EOF if the stream
// ends with nothing buffered, io.ErrUnexpectedEOF if it ends with a partial
// frame buffered.
func (fr *frameReader) fill(need, limit int) error {
	empty := 0
	for fr.wpos-fr.rpos < need {
		if fr.rerr != nil {
			err := fr.rerr
			if err != io.EOF {
				fr.rerr = nil // report once; the caller may retry
			} else if fr.wpos > fr.rpos {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if err := fr.makeRoom(need, limit); err != nil {
			return err
		}
		n, err := fr.r.Read(fr.buf[fr.wpos:])
		if n < 0 || n > len(fr.buf)-fr.wpos {
			return io.ErrShortBuffer // broken reader; avoid corrupting the buffer
		}
		fr.wpos += n
		fr.rerr = err
		if n == 0 && err == nil {
			if empty++; empty >= frameMaxEmptyReads {
				return io.ErrNoProgress
			}
		} else {
			empty = 0
		}
	}
	return nil
}

// makeRoom ensures there is free space at the end of buf, compacting the
// unread bytes to the front or growing the buffer towards (never beyond)
// limit bytes. Growth doubles, and only when the buffer is full, so memory
// tracks the bytes actually received, not a declared length.
func (fr *frameReader) makeRoom(need, limit int) error {
	if fr.buf == nil {
		fr.buf = make([]byte, frameBufSize)
	}
	if fr.wpos < len(fr.buf) && fr.rpos+need <= len(fr.buf) {
		return nil
	}
	if fr.rpos > 0 {
		fr.wpos = copy(fr.buf, fr.buf[fr.rpos:fr.wpos])
		fr.rpos = 0
		if fr.wpos < len(fr.buf) && need <= len(fr.buf) {
			return nil
		}
	}
	if fr.wpos < len(fr.buf) {
		return nil // room to read more; grow when it is full
	}
	size := min(2*len(fr.buf), limit)
	if extra := size - max(len(fr.buf), frameBufKeep); extra > 0 && fr.budget != nil {
		if !fr.budget.acquire(extra, frameBudgetWait) {
			return newError(codeRateLimited, "server is short of memory for large requests; retry later")
		}
		fr.held += extra
	}
	nb := make([]byte, size)
	copy(nb, fr.buf[:fr.wpos])
	fr.buf = nb
	return nil
}

// maybeShrink replaces a buffer that grew large for one big frame by a
// small one once the data it holds fits.
func (fr *frameReader) maybeShrink() {
	if len(fr.buf) <= frameBufKeep || fr.wpos-fr.rpos > frameBufSize {
		return
	}
	nb := make([]byte, frameBufSize)
	fr.wpos = copy(nb, fr.buf[fr.rpos:fr.wpos])
	fr.rpos = 0
	fr.buf = nb
	fr.releaseBudget()
}

// releaseBudget returns what the reader holds of the shared budget; the
// connection calls it when it closes.
func (fr *frameReader) releaseBudget() {
	if fr.held > 0 {
		fr.budget.release(fr.held)
		fr.held = 0
	}
}

// frameBudgetWait is how long a reader waits for budget before the request
// is refused with RATE_LIMITED (and the connection closed, freeing its own).
var frameBudgetWait = 5 * time.Second

// frameBudget bounds the memory all connections together may hold in
// request buffers beyond frameBufKeep each, so many clients sending 16 MiB
// requests at once cannot exhaust memory.
type frameBudget struct {
	mu   sync.Mutex
	free int
	wake chan struct{} // closed and replaced on every release
}

func newFrameBudget(bytes int) *frameBudget {
	return &frameBudget{free: bytes, wake: make(chan struct{})}
}

func (b *frameBudget) acquire(n int, wait time.Duration) bool {
	var timer *time.Timer
	for {
		b.mu.Lock()
		if b.free >= n {
			b.free -= n
			b.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return true
		}
		ch := b.wake
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

func (b *frameBudget) release(n int) {
	b.mu.Lock()
	b.free += n
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// frameStart reserves room for a frame header at the end of dst (nothing
// in JSONL mode), so a payload can be appended in place and the frame
// completed with frameFinish: the reply path builds each frame in one
// buffer, without copying the payload.
func frameStart(dst []byte, m wireMode) []byte {
	if m == modeJSONL {
		return dst
	}
	var h [frameHeaderLen]byte
	return append(dst, h[:]...)
}

// frameFinish completes the frame that starts at f[0] (see frameStart).
func frameFinish(f []byte, m wireMode) []byte { return frameFinishAt(f, 0, m) }

// frameFinishAt completes the frame begun by frameStart at f[start:].
func frameFinishAt(f []byte, start int, m wireMode) []byte {
	if m == modeJSONL {
		return append(f, '\n')
	}
	putFrameHeader((*[frameHeaderLen]byte)(f[start:start+frameHeaderLen]), f[start+frameHeaderLen:])
	return f
}

// putFrameHeader writes the header of an outgoing binary frame carrying
// payload: version 1, flags CRC_PRESENT, no extension.
func putFrameHeader(h *[frameHeaderLen]byte, payload []byte) {
	copy(h[0:4], frameMagic[:])
	binary.BigEndian.PutUint16(h[4:6], frameVersion)
	binary.BigEndian.PutUint16(h[6:8], frameFlagCRC)
	binary.BigEndian.PutUint16(h[8:10], 0)
	binary.BigEndian.PutUint32(h[10:14], uint32(len(payload)))
	binary.BigEndian.PutUint32(h[14:18], crc32.Checksum(payload, frameCRCTable))
}

// appendFrame appends one outgoing frame carrying payload, in mode m.
// Binary frames have version 1, flags CRC_PRESENT and no extension. The
// caller keeps payloads within maxPayload; the peer rejects larger ones.
func appendFrame(dst []byte, m wireMode, payload []byte) []byte {
	dst = slices.Grow(dst, frameHeaderLen+1+len(payload)) // one allocation
	start := len(dst)
	return frameFinishAt(append(frameStart(dst, m), payload...), start, m)
}
