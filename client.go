package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
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
			if e := m.connErr(); e != nil {
				return nil, e
			}
			return nil, fmt.Errorf("response for %q while waiting for %q", m.ID, id)
		}
	}
}

// setMode switches the client's framing, after a HELLO that agreed to it.
func (c *client) setMode(m wireMode) {
	c.mode = m
	c.fr.setMode(m)
}

// dialOptions configure dialClientOpts: TLS and a bearer token.
type dialOptions struct {
	Timeout time.Duration // dial (and TLS handshake) timeout; 0 means 5s
	TLS     *tls.Config   // non-nil: connect with TLS
	Token   string        // non-empty: send AUTH bearer right after connecting
}

// dialClientOpts connects to addr, with TLS when o.TLS is set, and
// authenticates with o.Token when given. A refused AUTH is returned as an
// *rcpError carrying the server's code, message and details.
func dialClientOpts(addr string, o dialOptions) (*client, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	d := &net.Dialer{Timeout: timeout}
	var nc net.Conn
	var err error
	if o.TLS != nil {
		nc, err = tls.DialWithDialer(d, "tcp", addr, o.TLS)
	} else {
		nc, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	c := newClient(nc)
	if o.Token != "" {
		m, err := c.call("AUTH", map[string]string{"method": "bearer", "token": o.Token})
		if err != nil {
			c.close()
			return nil, fmt.Errorf("AUTH: %w", err)
		}
		if e := m.rcpErr(); e != nil {
			c.close()
			return nil, e
		}
	}
	return c, nil
}

// rcpErr returns an error response as an *rcpError, or nil for success.
func (m *message) rcpErr() *rcpError {
	if m.Status == "ok" {
		return nil
	}
	if m.Error == nil {
		return &rcpError{Code: codeInternalError, Message: "error response without an error object"}
	}
	return &rcpError{Code: m.Error.Code, Message: m.Error.Message, Details: m.Error.Details}
}

// connErr returns an error response that answers no request (its id is
// empty or absent) as an *rcpError, and nil for any other message. Such a
// frame is the server's word on the connection as a whole, such as
// RATE_LIMITED over max_connections, sent just before it closes.
func (m *message) connErr() *rcpError {
	if m.Type != "response" || m.ID != "" || m.Status == "ok" {
		return nil
	}
	return m.rcpErr()
}

// clientTLSConfig builds a TLS configuration for a client: caFile adds
// trusted roots (PEM), certFile and keyFile a client certificate, insecure
// skips server verification. serverName defaults to addr's host.
func clientTLSConfig(addr, caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		cfg.ServerName = host
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificates found", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, fmt.Errorf("a client certificate needs both a certificate and a key file")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
