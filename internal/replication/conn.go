package replication

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
)

// ConnState is where a connection is in its life.
type ConnState int

const (
	// ConnEstablished: the connection is open and its writer keeps up.
	ConnEstablished ConnState = iota
	// ConnPaused: the socket has not accepted our writes for a while, so
	// commands are queuing (Synapse's "paused").
	ConnPaused
	// ConnClosing: a close has begun; queued commands and a final ERROR
	// are being flushed.
	ConnClosing
	// ConnClosed: the socket is closed.
	ConnClosed
)

func (s ConnState) String() string {
	switch s {
	case ConnEstablished:
		return "established"
	case ConnPaused:
		return "paused"
	case ConnClosing:
		return "closing"
	case ConnClosed:
		return "closed"
	}
	return "ConnState(" + strconv.Itoa(int(s)) + ")"
}

// Close reasons, the reason_type label of the close_reason metric and the
// reason given to ConnectionClosed.
const (
	CloseRemoteClosed   = "remote_closed"   // the peer closed the connection
	CloseReadError      = "read_error"      // reading failed (reset, ...)
	CloseWriteError     = "write_error"     // writing failed (reset, broken pipe)
	CloseWriteTimeout   = "write_timeout"   // one flush took longer than the write timeout
	CloseSlowConsumer   = "slow_consumer"   // too many commands pending: ERROR Failed to keep up
	ClosePingTimeout    = "ping_timeout"    // nothing received for the ping timeout
	CloseLineTooLong    = "line_too_long"   // the peer sent a line over the limit
	CloseInvalidCommand = "invalid_command" // unknown command, or wrong direction
	CloseParseError     = "parse_error"     // a command whose arguments do not parse
	CloseWrongRemote    = "wrong_remote"    // the server announced another name
	CloseSubscribeError = "subscribe_error" // REPLICATE failed (unknown stream, token too old, storage)
	CloseHandlerError   = "handler_error"   // the local handler failed (client side)
	CloseRemoteError    = "remote_error"    // the peer sent ERROR (client side)
	CloseShutdown       = "shutdown"        // Server.Shutdown, or the client's context ended
	CloseRequested      = "closed_by_owner" // ServerConn.CloseWithError
)

// maxFlushBytes bounds one vectored write, so that pending counts drop (and
// catch-up makes room) in steps rather than only after a huge write.
const maxFlushBytes = 1 << 20

// pausedAfter is how long one flush may block before the connection reports
// itself paused.
const pausedAfter = 500 * time.Millisecond

type connConfig struct {
	maxLineLength int
	limits        queueLimits
	writeTimeout  time.Duration
	pingInterval  time.Duration
	pingTimeout   time.Duration
	// liveKeepAlive, when set, gives the current interval and timeout,
	// which a running server can change (live.go); the keep-alive loop
	// follows it at its next tick.
	liveKeepAlive func() (interval, timeout time.Duration)
	clock         Clock
	logger        logr.Logger
	metrics       *metrics
	// pages is the server's cache of catch-up pages; nil on a client.
	pages *pageCache
	// inboundOK says which commands this side may receive.
	inboundOK func(name string) bool
}

// conn is the engine shared by both sides: one read loop, one write loop
// draining a bounded queue with vectored writes, and the keep-alive loop.
//
// Closing follows nats-server's client: whoever decides to close marks the
// state under the lock (closeLocked) and wakes the writer, which flushes
// what is left, lingers for the peer and closes the socket. Nothing that
// holds the lock ever releases it to close.
type conn struct {
	cfg            connConfig
	nc             net.Conn
	id             uint64
	connectedSince time.Time

	// dispatch handles a received command (other than PING bookkeeping);
	// an error closes the connection, see dispatchError.
	dispatch func(Command) error
	// rdata, if set, receives RDATA instead of dispatch, unboxed (token is
	// 0 when batch); the row aliases the read buffer and is valid only
	// during the call.
	rdata func(stream string, token int64, batch bool, row []byte) error
	// rdataStream is the stream name of the last RDATA read (read loop
	// only): the next line naming it again reuses the string as checked.
	rdataStream string
	// onClosing, if set, is called once, under mu, when a close begins (to
	// cancel work done on the connection's behalf); it must not take mu.
	onClosing func()

	mu           sync.Mutex
	name         string
	out          outQueue
	roomCh       chan struct{}
	writerIdle   bool // the writer waits on wake: pushes must signal it
	closing      bool
	closeReason  string
	closeErr     error
	closeStarted time.Time
	// sentFinalError: the close queued an ERROR, which the writer lingers
	// for the peer to read.
	sentFinalError bool

	wake      chan struct{} // cap 1: the writer has work or must close
	closingCh chan struct{} // closed when a close begins
	// closingSet is set when closingCh is closed, for the read loop to
	// check per line more cheaply than a select.
	closingSet atomic.Bool
	readerDone chan struct{} // closed when the read loop has ended
	netClosed  chan struct{} // closed once the socket is closed
	closeNet   sync.Once

	commandsIn   [numCommands]atomic.Uint64
	commandsOut  [numCommands]atomic.Uint64
	bytesIn      atomic.Uint64
	bytesOut     atomic.Uint64
	lastRecvNS   atomic.Int64
	receivedPing atomic.Bool
}

func newConn(cfg connConfig, nc net.Conn, id uint64, name string) *conn {
	now := cfg.clock.Now()
	c := &conn{
		cfg:            cfg,
		nc:             nc,
		id:             id,
		name:           name,
		connectedSince: now,
		wake:           make(chan struct{}, 1),
		closingCh:      make(chan struct{}),
		readerDone:     make(chan struct{}),
		netClosed:      make(chan struct{}),
	}
	c.out.pages = cfg.pages
	c.lastRecvNS.Store(now.UnixNano())
	return c
}

// run runs the connection's loops and returns once all have ended, with the
// reason the connection closed.
func (c *conn) run() (reason string, err error) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.readLoop() }()
	go func() { defer wg.Done(); c.writeLoop() }()
	// The keep-alive loop runs on the caller's goroutine, which would
	// otherwise only wait: one goroutine (and its stack) fewer per
	// connection. It ends once the socket is closed, as the others do.
	c.keepAliveLoop()
	wg.Wait()
	c.mu.Lock()
	reason, err = c.closeReason, c.closeErr
	c.out.dropQueued()
	c.out.items = nil
	c.mu.Unlock()
	if err != nil && !errors.Is(err, io.EOF) {
		c.cfg.logger.V(1).Info("replication connection closed", "conn", c.id, "reason", reason, "error", err.Error())
	} else {
		c.cfg.logger.V(1).Info("replication connection closed", "conn", c.id, "reason", reason)
	}
	c.cfg.metrics.connClosed(reason)
	return reason, err
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) shutNet() {
	c.closeNet.Do(func() {
		_ = c.nc.Close()
		close(c.netClosed)
	})
}

// errLineTooLong is returned when a command would not fit the line limit.
var errLineTooLong = errors.New("line too long")

// closeWith begins closing; see closeLocked.
func (c *conn) closeWith(reason, errText string, dropQueue bool, err error) {
	c.mu.Lock()
	c.closeLocked(reason, errText, dropQueue, err)
	c.mu.Unlock()
}

// closeLocked marks the connection closing and wakes the writer, which does
// the rest: with errText the peer gets "ERROR errText" after what is already
// queued (or instead of it, when dropQueue: a slow consumer must not wait for
// 10000 lines). Only the first close counts. c.mu is held, and stays held.
func (c *conn) closeLocked(reason, errText string, dropQueue bool, err error) {
	if c.closing {
		return
	}
	c.closing = true
	c.closeReason = reason
	c.closeErr = err
	c.closeStarted = c.cfg.clock.Now()
	if dropQueue {
		c.out.dropQueued()
	}
	if errText != "" {
		text := sanitizeText(errText)
		if limit := c.cfg.maxLineLength - len("ERROR "); len(text) > limit {
			// Quoted causes can be long; the peer must still get a line.
			text = bytes.ToValidUTF8(text[:max(limit, 0)], nil)
		}
		line := append(append([]byte("ERROR "), text...), '\n')
		c.sentFinalError = true
		c.out.push(outItem{b: line, n: 1, cmd: idError})
	}
	c.wakeRoomLocked()
	c.closingSet.Store(true)
	close(c.closingCh)
	if c.onClosing != nil {
		c.onClosing()
	}
	c.signal()
}

// sanitizeText keeps an error text on one line, whatever it quotes.
func sanitizeText(s string) []byte {
	b := []byte(s)
	for i, ch := range b {
		if ch == '\n' || ch == '\r' || ch == 0 {
			b[i] = ' '
		}
	}
	return b
}

func (c *conn) wakeRoomLocked() {
	if c.roomCh != nil {
		close(c.roomCh)
		c.roomCh = nil
	}
}

// encodeLine formats cmd as one line with its newline, within the limit.
func (c *conn) encodeLine(cmd Command) ([]byte, error) {
	b, err := AppendCommand(make([]byte, 0, 64), cmd)
	if err != nil {
		return nil, err
	}
	if len(b) > c.cfg.maxLineLength {
		return nil, fmt.Errorf("send %s: %w (%d bytes > %d); the peer would drop the connection", cmd.Name(), errLineTooLong, len(b), c.cfg.maxLineLength)
	}
	return append(b, '\n'), nil
}

// errConnClosed is returned for sends on a connection that is closing.
var errConnClosed = errors.New("replication connection is closed")

// sendControl queues one command (SERVER, PING, ERROR, NAME, REPLICATE, a
// handler's reply, ...). It counts against the slow-consumer limit like live
// rows do, so a peer that provokes replies without reading them cannot grow
// the queue without bound.
func (c *conn) sendControl(cmd Command) error {
	line, err := c.encodeLine(cmd)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pushLiveLocked(outItem{b: line, n: 1, cmd: commandIDOf(cmd.Name())}) {
		return errConnClosed
	}
	return nil
}

// sendUnlimited queues one command outside the slow-consumer limit, for a
// bounded burst of our own (a client's opening commands).
func (c *conn) sendUnlimited(cmd Command) error {
	line, err := c.encodeLine(cmd)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return errConnClosed
	}
	c.pushLocked(outItem{b: line, n: 1, cmd: commandIDOf(cmd.Name())})
	return nil
}

// pushLocked appends an item to the queue; c.mu is held.
func (c *conn) pushLocked(it outItem) {
	c.out.push(it)
	if it.cmd >= 0 {
		c.commandsOut[it.cmd].Add(uint64(it.n))
	}
	if c.writerIdle {
		c.writerIdle = false
		c.signal()
	}
}

// pushLiveLocked queues live rows, or, when the peer is too far behind,
// begins closing it as a slow consumer. It reports whether the rows were
// queued; c.mu is held, and stays held.
func (c *conn) pushLiveLocked(it outItem) bool {
	if c.closing {
		return false
	}
	if !c.out.admits(it, c.cfg.limits) {
		c.closeSlowConsumerLocked("")
		return false
	}
	c.pushLocked(it)
	return true
}

// closeSlowConsumerLocked closes a peer that does not read fast enough;
// during names the subscription that found it, if any.
func (c *conn) closeSlowConsumerLocked(during string) {
	err := fmt.Errorf("more than %d commands or %d bytes queued beyond the write in progress (%d commands, %d bytes)",
		c.cfg.limits.cmds, c.cfg.limits.bytes, c.out.queuedCmds, c.out.queuedBytes)
	if during != "" {
		err = fmt.Errorf("%w while subscribing to %s", err, during)
	}
	c.closeLocked(CloseSlowConsumer, "Failed to keep up", true, err)
}

// waitCatchUpRoom waits until the queue has room for a catch-up page (see
// outQueue.hasRoomForCatchUp).
func (c *conn) waitCatchUpRoom(ctx context.Context) error {
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return errConnClosed
		}
		if c.out.hasRoomForCatchUp(c.cfg.limits) {
			c.mu.Unlock()
			return nil
		}
		if c.roomCh == nil {
			c.roomCh = make(chan struct{})
		}
		room := c.roomCh
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closingCh:
			return errConnClosed
		}
	}
}

// Small items (live rows: one update's lines each) are copied together into
// one scratch buffer before writing: for lines of a hundred bytes a memcpy
// is cheaper than one iovec each in the kernel. Large items (catch-up pages)
// are written from where they are.
const (
	coalesceItemMax = 2 << 10
	scratchSize     = 256 << 10
)

// scratchPool holds the writers' coalescing buffers: a writer takes one
// only for the time of a flush, so an idle connection holds none. A flush
// to a peer that reads nothing blocks until the write timeout, holding its
// buffer: a batch with few small lines (a PING or POSITION among catch-up
// pages, or none among 16 KB rows) takes one of smallScratchSize from
// smallScratchPool instead, so that a hundred stalled connections do not
// hold 256 KiB each.
var scratchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, scratchSize)
	return &b
}}

const smallScratchSize = 4 << 10

var smallScratchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, smallScratchSize)
	return &b
}}

// scratchFor returns the pool whose buffers suit items: those coalesce
// copies only items of at most coalesceItemMax bytes.
func scratchFor(items []outItem) *sync.Pool {
	small := 0
	for _, it := range items {
		if len(it.b) <= coalesceItemMax {
			small += len(it.b)
			if small > smallScratchSize {
				return &scratchPool
			}
		}
	}
	return &smallScratchPool
}

// coalesce appends to bufs the bytes of items, copying runs of small items
// into scratch (which never grows, so earlier slices of it stay valid).
func coalesce(bufs net.Buffers, scratch []byte, items []outItem) net.Buffers {
	runStart := -1 // start in scratch of the run that ends bufs, or -1
	for _, it := range items {
		if len(it.b) <= coalesceItemMax && len(scratch)+len(it.b) <= cap(scratch) {
			if runStart < 0 {
				runStart = len(scratch)
				bufs = append(bufs, nil)
			}
			scratch = append(scratch, it.b...)
			bufs[len(bufs)-1] = scratch[runStart:len(scratch):len(scratch)]
			continue
		}
		runStart = -1
		bufs = append(bufs, it.b)
	}
	return bufs
}

// lingerTimeout bounds how long a close waits, after its final ERROR, for
// the peer to close its side.
const lingerTimeout = 500 * time.Millisecond

// lingerForPeer half-closes the socket after the final ERROR and waits for
// the peer to close its side (the read loop discards what it still sends),
// or for lingerTimeout. Closing at once while the peer's lines are still
// unread would make the kernel reset the connection, and the peer could lose
// the ERROR that says why.
func (c *conn) lingerForPeer() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	t := time.NewTimer(lingerTimeout)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	case <-c.netClosed:
	}
}

func (c *conn) writeLoop() {
	defer c.shutNet()
	var bufs net.Buffers
	var batch []outItem
	for {
		c.mu.Lock()
		batch = c.out.take(batch[:0], maxFlushBytes, c.cfg.clock.Now())
		if len(batch) == 0 {
			c.writerIdle = true
			closing, sentError := c.closing, c.sentFinalError
			c.mu.Unlock()
			if closing {
				if sentError {
					c.lingerForPeer()
				}
				return
			}
			select {
			case <-c.wake:
				// Let the goroutine that woke us (a publisher in the
				// middle of a burst, usually) queue more before we take
				// the batch: fewer, larger writes.
				runtime.Gosched()
			case <-c.netClosed:
				return
			}
			continue
		}
		c.mu.Unlock()

		var scratch *[]byte
		var pool *sync.Pool
		if len(batch) == 1 {
			// Nothing to coalesce (a PING, a reply, a page).
			bufs = append(bufs[:0], batch[0].b)
		} else {
			pool = scratchFor(batch)
			scratch = pool.Get().(*[]byte)
			bufs = coalesce(bufs[:0], (*scratch)[:0], batch)
		}
		if c.cfg.writeTimeout > 0 {
			// The socket's deadline is checked by the runtime against the
			// wall clock, so it is set from the wall clock.
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout))
		}
		toWrite := bufs // WriteTo consumes its receiver
		n, err := toWrite.WriteTo(c.nc)
		clear(bufs) // drop references to written lines
		if scratch != nil {
			pool.Put(scratch)
		}
		c.out.release(batch)
		clear(batch) // drop references to queued lines
		c.bytesOut.Add(uint64(n))

		c.mu.Lock()
		c.out.written()
		c.wakeRoomLocked()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.closeLocked(CloseWriteTimeout, "", false, fmt.Errorf("write did not finish within %s: %w", c.cfg.writeTimeout, err))
			} else {
				c.closeLocked(CloseWriteError, "", false, fmt.Errorf("write: %w", err))
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// readLoop reads lines, checks and parses them, and dispatches commands.
func (c *conn) readLoop() {
	defer close(c.readerDone)
	size := max(64<<10, c.cfg.maxLineLength+2)
	br := newLineReader(c.nc, size)
	// Bytes received but not yet added to bytesIn: like the time of
	// receipt, the counter is updated once per read from the socket (and
	// every 128 lines), before the lines are handled, not per line.
	inBytes := 0
	defer func() { c.bytesIn.Add(uint64(inBytes)) }()
	for lines := 0; ; lines++ {
		line, err := br.ReadSlice()
		if errors.Is(err, bufio.ErrBufferFull) {
			c.closeWith(CloseLineTooLong, "Line length exceeded", false, fmt.Errorf("received a line longer than %d bytes", c.cfg.maxLineLength))
			return
		}
		if err != nil {
			// A final line without a newline is incomplete: not a command.
			c.closeWith(readCloseReason(err), "", false, err)
			return
		}
		inBytes += len(line)
		// Note the time of receipt once per read from the socket (and
		// every 128 lines), not per line: keep-alive needs only seconds,
		// and a clock read per line shows in the fan-out benchmarks
		// (docs/benchmarks.md).
		if br.Buffered() == 0 || lines%128 == 0 {
			c.bytesIn.Add(uint64(inBytes))
			inBytes = 0
			c.lastRecvNS.Store(c.cfg.clock.Now().UnixNano())
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > c.cfg.maxLineLength {
			c.closeWith(CloseLineTooLong, "Line length exceeded", false, fmt.Errorf("received a line of %d bytes, over the limit of %d", len(line), c.cfg.maxLineLength))
			return
		}
		if !c.handleLine(line) {
			return
		}
	}
}

func readCloseReason(err error) string {
	if errors.Is(err, io.EOF) {
		return CloseRemoteClosed
	}
	return CloseReadError
}

// handleLine processes one received line; false means the connection is
// closing.
func (c *conn) handleLine(line []byte) bool {
	if isBlank(line) {
		return true
	}
	if c.closingSet.Load() {
		// Closing: what the peer still sends is read and dropped, so the
		// close is not turned into a reset.
		return true
	}
	var name, rest []byte
	var known string
	var idx commandID
	if len(line) >= len("RDATA ") && string(line[:len("RDATA ")]) == "RDATA " {
		// Most lines: what splitName and internName would find.
		name, rest, known, idx = line[:len(CmdRdata)], line[len("RDATA "):], CmdRdata, idRdata
	} else {
		name, rest = splitName(line)
		known, idx = internName(name)
	}
	if idx == idUnknown || !c.cfg.inboundOK(known) {
		perr := &ProtocolError{Command: safeName(name), Invalid: true}
		c.closeWith(CloseInvalidCommand, perr.Error(), false, perr)
		return false
	}
	fastRdata := known == CmdRdata && c.rdata != nil
	if !fastRdata { // parseRdata checks its fields itself, in one pass
		if err := checkLine(known, line); err != nil {
			c.closeWith(CloseParseError, err.Error(), false, err)
			return false
		}
	}
	var err error
	if fastRdata {
		// The hot path: no interface boxing, no command struct, the row
		// aliases the buffer.
		stream, token, batch, row, perr := parseRdataArgs(rest, c.rdataStream)
		if perr != nil {
			c.closeWith(CloseParseError, perr.Error(), false, perr)
			return false
		}
		if stream != c.rdataStream { // no write (barrier) per line
			c.rdataStream = stream
		}
		c.commandsIn[idx].Add(1)
		err = c.rdata(stream, token, batch, row)
	} else {
		// Only RDATA rows may alias the read buffer (the client copies
		// them into its batch); handlers may keep anything else.
		cmd, perr := parseArgs(known, rest, true)
		if perr != nil {
			c.closeWith(CloseParseError, perr.Error(), false, perr)
			return false
		}
		c.commandsIn[idx].Add(1)
		if known == CmdPing {
			c.receivedPing.Store(true)
			return true
		}
		err = c.dispatch(cmd)
	}
	if err != nil {
		var de *dispatchError
		if errors.As(err, &de) {
			c.closeWith(de.reason, de.errText, false, de.err)
		} else {
			c.closeWith(CloseHandlerError, err.Error(), false, err)
		}
		return false
	}
	return true
}

// checkLine applies the line-wide checks of the protocol's hardening.
func checkLine(name string, line []byte) error {
	if bytes.IndexByte(line, 0) >= 0 {
		return &ProtocolError{Command: name, Msg: "line contains a NUL byte"}
	}
	if !utf8.Valid(line) {
		return &ProtocolError{Command: name, Msg: "line is not valid UTF-8"}
	}
	return nil
}

// dispatchError lets a dispatch function choose how the connection closes.
type dispatchError struct {
	reason  string
	errText string // sent as ERROR when not empty
	err     error
}

func (e *dispatchError) Error() string { return e.err.Error() }
func (e *dispatchError) Unwrap() error { return e.err }

// keepAliveLoop runs Synapse's keep-alive: every ping interval it sends
// PING if nothing was sent since the previous tick, closes a peer silent for
// the ping timeout (once it has pinged us), and aborts a close that has not
// finished within the ping timeout.
//
// "Nothing sent since the previous tick" is counted in commands, not by
// comparing times: Synapse's loop compares the time of its last send with
// "now - 5 s" in milliseconds, so its own PING of the previous tick counts
// as sent at that tick and it pings every 5 s. A timestamp taken when the
// PING is written falls a little after the tick, and comparing it with the
// interval would skip every other tick (a PING every 10 s).
func (c *conn) keepAliveLoop() {
	interval, timeout := c.keepAlive()
	t := c.cfg.clock.NewTicker(interval)
	defer func() { t.Stop() }()
	queuedAtTick := c.commandsQueued()
	for {
		select {
		case <-c.netClosed:
			return
		case <-t.C():
		}
		if iv, to := c.keepAlive(); iv != interval || to != timeout {
			timeout = to
			if iv != interval {
				interval = iv
				t.Stop()
				t = c.cfg.clock.NewTicker(interval)
			}
		}
		now := c.cfg.clock.Now()
		c.mu.Lock()
		closing, started := c.closing, c.closeStarted
		c.mu.Unlock()
		if closing {
			if now.Sub(started) > timeout {
				c.cfg.logger.Info("replication connection did not close in time, aborting", "conn", c.id)
				c.shutNet()
				return
			}
			continue
		}
		if c.commandsQueued() == queuedAtTick {
			_ = c.sendControl(PingCommand{Data: strconv.FormatInt(now.UnixMilli(), 10)})
		}
		queuedAtTick = c.commandsQueued()
		if c.receivedPing.Load() {
			if silent := now.Sub(time.Unix(0, c.lastRecvNS.Load())); silent > timeout {
				c.closeWith(ClosePingTimeout, "ping timeout", false, fmt.Errorf("%w: nothing received for %s", ErrPingTimeout, silent))
			}
		}
	}
}

// keepAlive returns the current ping interval and timeout.
func (c *conn) keepAlive() (interval, timeout time.Duration) {
	if c.cfg.liveKeepAlive != nil {
		return c.cfg.liveKeepAlive()
	}
	return c.cfg.pingInterval, c.cfg.pingTimeout
}

// ErrPingTimeout is wrapped by the error of a connection closed because the
// peer sent nothing for the ping timeout.
var ErrPingTimeout = errors.New("ping timeout")

// connStats is a snapshot of a connection's counters.
type connStats struct {
	name            string
	state           ConnState
	pendingCommands int
	pendingBytes    int
	commandsIn      map[string]uint64
	commandsOut     map[string]uint64
	bytesIn         uint64
	bytesOut        uint64
	lastReceived    time.Time
}

func (c *conn) stats() connStats {
	c.mu.Lock()
	st := connStats{
		name: c.name,
	}
	st.pendingCommands, st.pendingBytes = c.out.pending()
	switch {
	case c.closing:
		st.state = ConnClosing
	case c.out.flushingFor(c.cfg.clock.Now()) > pausedAfter:
		st.state = ConnPaused
	default:
		st.state = ConnEstablished
	}
	c.mu.Unlock()
	select {
	case <-c.netClosed:
		st.state = ConnClosed
	default:
	}
	st.commandsIn = countersMap(&c.commandsIn)
	st.commandsOut = countersMap(&c.commandsOut)
	st.bytesIn = c.bytesIn.Load()
	st.bytesOut = c.bytesOut.Load()
	st.lastReceived = time.Unix(0, c.lastRecvNS.Load())
	return st
}

func countersMap(a *[numCommands]atomic.Uint64) map[string]uint64 {
	m := map[string]uint64{}
	for id := range numCommands {
		if n := a[id].Load(); n > 0 {
			m[commandTable[id].name] = n
		}
	}
	return m
}

// commandsQueued is how many commands were ever queued for the peer.
func (c *conn) commandsQueued() uint64 {
	var n uint64
	for id := range numCommands {
		n += c.commandsOut[id].Load()
	}
	return n
}

func (c *conn) setName(name string) {
	c.mu.Lock()
	c.name = name
	c.mu.Unlock()
}

func (c *conn) getName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.name
}
