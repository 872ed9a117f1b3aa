package wxmock

import (
	"encoding/binary"
	"net"
	"sync"
)

// HTTP/2 error codes a reset_after_consume fault may send (RFC 9113 §7).
var h2ErrorCodes = map[string]uint32{
	"PROTOCOL_ERROR": 0x1,
	"INTERNAL_ERROR": 0x2,
	"REFUSED_STREAM": 0x7,
	"CANCEL":         0x8,
}

const (
	h2FrameHeaderLen = 9
	h2FrameRSTStream = 0x3
	h2ErrInternal    = 0x2
)

// Listener wraps ln so that connections accepted through it let a
// reset_after_consume fault over HTTP/2 send the RST_STREAM error code the
// fault names ([Fault.H2Error]). Go's HTTP/2 server resets the stream of
// an aborted handler with INTERNAL_ERROR and offers no way to choose
// another code, so the connection rewrites the error code of that
// RST_STREAM frame as it is written. Connections that speak HTTP/1 pass
// through untouched. Serve the emulator on the returned listener (with
// http.Server.Protocols allowing unencrypted HTTP/2 for h2c).
//
// When two streams of one connection are reset with different codes at
// the same instant, their codes may be swapped.
func (s *Server) Listener(ln net.Listener) net.Listener {
	return &resetListener{Listener: ln, s: s}
}

type resetListener struct {
	net.Listener
	s *Server
}

func (l *resetListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &resetConn{Conn: c, s: l.s, key: c.RemoteAddr().String()}
	l.s.resetConns.Store(rc.key, rc)
	return rc, nil
}

// resetConn tracks the HTTP/2 frames it writes, to rewrite the error code
// of the RST_STREAM frames that reset_after_consume faults asked for.
type resetConn struct {
	net.Conn
	s   *Server
	key string

	pmu     sync.Mutex
	pending []uint32 // error codes for the next handler resets, in order

	wmu   sync.Mutex
	mode  int8   // 0 undecided, 1 HTTP/1 (pass through), 2 HTTP/2
	skip  int    // payload bytes of the current frame still to pass
	held  []byte // an incomplete frame header or RST_STREAM frame
	close sync.Once
}

// queueReset asks for the next handler reset on this connection to carry
// code instead of INTERNAL_ERROR.
func (c *resetConn) queueReset(code uint32) {
	c.pmu.Lock()
	c.pending = append(c.pending, code)
	c.pmu.Unlock()
}

func (c *resetConn) popReset() (uint32, bool) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if len(c.pending) == 0 {
		return 0, false
	}
	code := c.pending[0]
	c.pending = c.pending[1:]
	return code, true
}

func (c *resetConn) Close() error {
	c.close.Do(func() { c.s.resetConns.CompareAndDelete(c.key, c) })
	return c.Conn.Close()
}

func (c *resetConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.mode == 0 && len(b) > 0 {
		// An HTTP/1 response starts with "HTTP/"; an HTTP/2 server starts
		// with a SETTINGS frame, whose first byte (the high byte of a
		// small length) is 0.
		c.mode = 2
		if b[0] == 'H' {
			c.mode = 1
		}
	}
	if c.mode != 2 {
		return c.Conn.Write(b)
	}
	out := c.rewrite(b)
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// rewrite scans the frames in held+b and returns the bytes that can be
// written now; an incomplete frame header or RST_STREAM frame at the end is
// held back until the rest arrives. It returns b itself when nothing was
// held or changed.
func (c *resetConn) rewrite(b []byte) []byte {
	data, owned := b, false
	if len(c.held) > 0 {
		data, owned = append(c.held, b...), true
		c.held = nil
	}
	i := 0
	for i < len(data) {
		if c.skip > 0 {
			k := min(c.skip, len(data)-i)
			i += k
			c.skip -= k
			continue
		}
		if len(data)-i < h2FrameHeaderLen {
			break
		}
		n := int(data[i])<<16 | int(data[i+1])<<8 | int(data[i+2])
		if data[i+3] != h2FrameRSTStream || n != 4 {
			i += h2FrameHeaderLen
			c.skip = n
			continue
		}
		if len(data)-i < h2FrameHeaderLen+4 {
			break
		}
		p := i + h2FrameHeaderLen
		if binary.BigEndian.Uint32(data[p:]) == h2ErrInternal {
			if code, ok := c.popReset(); ok && code != h2ErrInternal {
				if !owned {
					data, owned = append([]byte(nil), data...), true
				}
				binary.BigEndian.PutUint32(data[p:], code)
			}
		}
		i = p + 4
	}
	if i < len(data) {
		c.held = append([]byte(nil), data[i:]...)
	}
	return data[:i]
}
