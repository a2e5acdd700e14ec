package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"time"
)

// The RCP binary codec, written out again on purpose: this tool talks to
// any RCP server over the wire and must not share code with the server it
// checks.
//
// Frame: "RCPX" | version u16 | flags u16 | header_len u16 | payload_len u32 |
// crc32c(payload) u32, big-endian, then header_len bytes of extension and
// the payload.

const (
	hdrLen     = 18
	flagCRC    = 0x0001
	maxPayload = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeFrame(payload []byte) []byte {
	b := make([]byte, hdrLen, hdrLen+len(payload))
	copy(b, "RCPX")
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[6:], flagCRC)
	binary.BigEndian.PutUint32(b[10:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[14:], crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

func readFrame(r io.Reader) ([]byte, error) {
	var h [hdrLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if string(h[:4]) != "RCPX" {
		return nil, fmt.Errorf("server sent bad magic %q", h[:4])
	}
	if v := binary.BigEndian.Uint16(h[4:]); v != 1 {
		return nil, fmt.Errorf("server sent frame version %d", v)
	}
	flags := binary.BigEndian.Uint16(h[6:])
	ext := int(binary.BigEndian.Uint16(h[8:]))
	n := binary.BigEndian.Uint32(h[10:])
	if n > maxPayload {
		return nil, fmt.Errorf("server sent a %d-byte frame", n)
	}
	buf := make([]byte, ext+int(n))
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	p := buf[ext:]
	if flags&flagCRC != 0 && crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(h[14:]) {
		return nil, errors.New("server sent a frame with a bad CRC")
	}
	return p, nil
}

// msg is anything the server sends.
type msg struct {
	Type   string          `json:"type"`
	ID     *string         `json:"id"`
	Status string          `json:"status"`
	Result json.RawMessage `json:"result"`
	Error  *errBody        `json:"error"`
	Meta   *struct {
		WalOffset *uint64 `json:"wal_offset"`
	} `json:"meta"`
	SubscriptionID string `json:"subscription_id"`
	InstanceID     string `json:"instance_id"`
	Event          string `json:"event"`
	ToState        string `json:"to_state"`
	WalOffset      uint64 `json:"wal_offset"`
	raw            []byte
}

type errBody struct {
	Code      string         `json:"code"`
	Message   string         `json:"message"`
	Retryable *bool          `json:"retryable"`
	Details   map[string]any `json:"details"`
}

// conn is one client connection; events that arrive while waiting for a
// response are queued.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	events []*msg
	nextID int
	closed bool
}

func dial(addr string) (*conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &conn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}, nil
}

func (c *conn) close() {
	c.closed = true
	c.nc.Close()
}

func (c *conn) read(timeout time.Duration) (*msg, error) {
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	p, err := readFrame(c.br)
	if err != nil {
		return nil, err
	}
	m := &msg{raw: append([]byte(nil), p...)}
	if err := json.Unmarshal(p, m); err != nil {
		return nil, fmt.Errorf("undecodable message %q: %v", p, err)
	}
	return m, nil
}

// readResponse reads until the next response, queueing events.
func (c *conn) readResponse(timeout time.Duration) (*msg, error) {
	for {
		m, err := c.read(timeout)
		if err != nil {
			return nil, err
		}
		if m.Type == "event" {
			c.events = append(c.events, m)
			continue
		}
		return m, nil
	}
}
