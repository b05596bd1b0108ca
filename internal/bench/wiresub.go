package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// SubscriberKind says what the benchmark's subscribers are.
type SubscriberKind string

// The subscriber kinds.
const (
	// WireSubscribers speak the protocol on a bare connection and do only
	// what measuring needs: split lines, check each RDATA line's stream and
	// that numeric tokens increase, count rows. The master, not the
	// subscribers, is what is measured, and on 2 cores every microsecond a
	// subscriber spends is taken from the master.
	WireSubscribers SubscriberKind = "wire"
	// ClientSubscribers are full replication.Clients: every line parsed
	// and its row validated as JSON, rows copied for a handler, positions
	// kept. This is what a worker pays before its own work.
	ClientSubscribers SubscriberKind = "client"
)

// wireReadBuffer is the wire subscriber's read size: a catch-up page is
// hundreds of kilobytes, and fewer, larger reads cost fewer syscalls.
const wireReadBuffer = 512 << 10

// wirePingInterval matches the protocol's keep-alive, so the master never
// times a wire subscriber out.
const wirePingInterval = 5 * time.Second

// wireSub is one wire subscriber's connection.
type wireSub struct {
	s       *subscriber
	conn    net.Conn
	stream  string
	rdata   []byte // "RDATA <stream> "
	pos     []byte // "POSITION <stream> "
	server  string
	pending int64 // batch rows seen since the last numeric token
	last    int64
	writeMu sync.Mutex
}

// subscribeWire connects a wire subscriber and sends NAME and REPLICATE.
func (t *target) subscribeWire(ctx context.Context, s *subscriber, name string, from int64, now bool) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return fmt.Errorf("connect subscriber %s to %s: %w", name, t.addr, err)
	}
	w := &wireSub{s: s, conn: conn, stream: Stream, server: t.cfg.ServerName, last: from,
		rdata: []byte("RDATA " + Stream + " "), pos: []byte("POSITION " + Stream + " ")}
	start := "NAME " + name + "\nREPLICATE " + Stream + " " + strconv.FormatInt(from, 10) + "\n"
	if now {
		start = "NAME " + name + "\nREPLICATE " + Stream + " NOW\n"
	}
	if err := w.write(start); err != nil {
		_ = conn.Close()
		return fmt.Errorf("subscriber %s: %w", name, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go func() {
		<-cctx.Done()
		_ = conn.Close()
	}()
	go w.pinger(cctx)
	go func() {
		err := w.readLoop()
		if cctx.Err() != nil {
			err = cctx.Err()
		}
		s.done <- err
	}()
	return nil
}

func (w *wireSub) write(s string) error {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	_ = w.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(w.conn, s); err != nil {
		return fmt.Errorf("write to the master: %w", err)
	}
	return nil
}

func (w *wireSub) pinger(ctx context.Context) {
	tick := time.NewTicker(wirePingInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if w.write("PING "+strconv.FormatInt(time.Now().UnixMilli(), 10)+"\n") != nil {
				return
			}
		}
	}
}

// readLoop reads until the connection fails or a line is wrong. Lines are
// split in place in one large buffer; a partial line at its end moves to
// the front before the next read.
func (w *wireSub) readLoop() error {
	buf := make([]byte, wireReadBuffer)
	n := 0
	for {
		m, err := w.conn.Read(buf[n:])
		n += m
		start := 0
		for {
			i := bytes.IndexByte(buf[start:n], '\n')
			if i < 0 {
				break
			}
			if lerr := w.line(buf[start : start+i]); lerr != nil {
				w.s.fail(lerr)
				return lerr
			}
			start += i + 1
		}
		n = copy(buf, buf[start:n])
		if n == len(buf) {
			err := fmt.Errorf("a line longer than %d bytes from the master", len(buf))
			w.s.fail(err)
			return err
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			err = fmt.Errorf("read from the master: %w", err)
			w.s.fail(err)
			return err
		}
	}
}

// line handles one line from the master.
func (w *wireSub) line(l []byte) error {
	if bytes.HasPrefix(l, w.rdata) {
		rest := l[len(w.rdata):]
		sp := bytes.IndexByte(rest, ' ')
		if sp <= 0 {
			return fmt.Errorf("malformed RDATA line %q", preview(l))
		}
		tok, row := rest[:sp], rest[sp+1:]
		if string(tok) == "batch" {
			w.pending++
			return nil
		}
		token, err := strconv.ParseInt(string(tok), 10, 64)
		if err != nil {
			return fmt.Errorf("RDATA line with token %q: %w", tok, err)
		}
		if token <= w.last {
			return fmt.Errorf("token %d of stream %s after token %d: out of order", token, w.stream, w.last)
		}
		w.last = token
		rows := w.pending + 1
		w.pending = 0
		w.s.delivered(token, rows, row)
		return nil
	}
	word, args, _ := bytes.Cut(l, []byte{' '})
	switch string(word) {
	case "SERVER":
		if string(args) != w.server {
			return fmt.Errorf("the master calls itself %q, not %q", args, w.server)
		}
	case "POSITION":
		if !bytes.HasPrefix(l, w.pos) {
			return fmt.Errorf("POSITION of a stream not asked for: %q", preview(l))
		}
		token, err := strconv.ParseInt(string(l[len(w.pos):]), 10, 64)
		if err != nil {
			return fmt.Errorf("POSITION line %q: %w", preview(l), err)
		}
		if w.pending > 0 {
			return fmt.Errorf("POSITION %d in the middle of a batch of %d rows", token, w.pending)
		}
		w.last = max(w.last, token)
		w.s.position(token)
	case "ERROR":
		return fmt.Errorf("the master sent ERROR %s", args)
	case "PING":
		// The pinger keeps the connection alive; nothing to answer.
	case "RDATA":
		return fmt.Errorf("RDATA of a stream not asked for: %q", preview(l))
	default:
		// A subscriber of one stream gets nothing else from a master.
		return fmt.Errorf("unexpected line from the master: %q", preview(l))
	}
	return nil
}

func preview(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}
