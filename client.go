package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"
)

// client is the one small RCP client shared by the CLI, tools and tests:
// binary framing, pipelining (send many, then receive in order) and
// subscription events, which arrive interleaved with responses.
type client struct {
	nc     net.Conn
	fr     *frameReader
	bw     *bufio.Writer
	mode   wireMode
	nextID int
	buf    []byte
}

// message is any frame the server sends: a response or an event.
type message struct {
	Type   string          `json:"type"`
	ID     string          `json:"id"`
	Status string          `json:"status"`
	Result json.RawMessage `json:"result"`
	Error  *errorBody      `json:"error"`
	Meta   *struct {
		WalOffset uint64 `json:"wal_offset"`
	} `json:"meta"`
	Raw []byte `json:"-"`
}

func dialClient(addr string, timeout time.Duration) (*client, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return newClient(nc), nil
}

func newClient(nc net.Conn) *client {
	return &client{nc: nc, fr: newFrameReader(nc), bw: bufio.NewWriterSize(nc, 32<<10)}
}

func (c *client) close() error { return c.nc.Close() }

// send writes one request (buffered; flush sends it). params may be a
// json.RawMessage, a string of JSON, or any value encoding/json accepts.
func (c *client) send(op string, params any) (id string, err error) {
	c.nextID++
	id = strconv.Itoa(c.nextID)
	p := c.buf[:0]
	p = append(p, `{"type":"request","id":`...)
	p = encAppendString(p, id)
	p = append(p, `,"op":`...)
	p = encAppendString(p, op)
	switch v := params.(type) {
	case nil:
	case json.RawMessage:
		p = append(p, `,"params":`...)
		p = append(p, v...)
	case string:
		p = append(p, `,"params":`...)
		p = append(p, v...)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		p = append(p, `,"params":`...)
		p = append(p, b...)
	}
	p = append(p, '}')
	c.buf = p
	return id, c.sendRaw(p)
}

// sendRaw frames and buffers an arbitrary payload.
func (c *client) sendRaw(payload []byte) error {
	_, err := c.bw.Write(appendFrame(nil, c.mode, payload))
	return err
}

func (c *client) flush() error { return c.bw.Flush() }

// recv reads the next message of any type.
func (c *client) recv() (*message, error) {
	p, err := c.fr.next()
	if err != nil {
		return nil, err
	}
	m := &message{Raw: append([]byte(nil), p...)}
	if err := json.Unmarshal(p, m); err != nil {
		return nil, fmt.Errorf("undecodable message %q: %w", p, err)
	}
	return m, nil
}

// call sends one request and waits for its response, skipping events.
func (c *client) call(op string, params any) (*message, error) {
	id, err := c.send(op, params)
	if err != nil {
		return nil, err
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	for {
		m, err := c.recv()
		if err != nil {
			return nil, err
		}
		if m.Type == "response" && m.ID == id {
			return m, nil
		}
		if m.Type == "response" {
			return nil, fmt.Errorf("response for %q while waiting for %q", m.ID, id)
		}
	}
}

// setMode switches the client's framing, after a HELLO that agreed to it.
func (c *client) setMode(m wireMode) {
	c.mode = m
	c.fr.setMode(m)
}
