package master

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
	"github.com/tcprepl/tcprepl/internal/master/pglog"
	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

// Handler is the master's HTTP API (see docs/api.md).
func (m *Master) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/streams/{stream}/rows", m.requireToken(m.handlePublish))
	mux.HandleFunc("GET /v1/streams", m.handleStreams)
	mux.HandleFunc("GET /v1/connections", m.handleConnections)
	mux.HandleFunc("GET /v1/userips", m.requireReadToken(m.handleUserIPs))
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", m.handleHealth)
	mux.HandleFunc("GET /readyz", m.handleReady)
	return jsonErrors(mux)
}

// jsonErrors turns the plain-text 404 and 405 of ServeMux into the API's
// JSON error shape, keeping the Allow header of a 405. (A catch-all "/"
// pattern would do for 404 but would also hide every 405.)
func jsonErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&methodErrorWriter{ResponseWriter: w, r: r}, r)
	})
}

type methodErrorWriter struct {
	http.ResponseWriter
	r       *http.Request
	swallow bool
}

func (w *methodErrorWriter) WriteHeader(code int) {
	// Only ServeMux's own replies are plain text; the API's are JSON.
	plain := strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain")
	if (code == http.StatusMethodNotAllowed || code == http.StatusNotFound) && plain && !w.swallow {
		w.swallow = true
		w.Header().Set("Content-Type", "application/json")
		w.Header().Del("X-Content-Type-Options")
		w.ResponseWriter.WriteHeader(code)
		msg := fmt.Sprintf("no such endpoint %s %s; see docs/api.md", w.r.Method, w.r.URL.Path)
		if code == http.StatusMethodNotAllowed {
			msg = fmt.Sprintf("method %s not allowed on %s; allowed: %s", w.r.Method, w.r.URL.Path, w.Header().Get("Allow"))
		}
		body, _ := json.Marshal(apiError{Error: msg})
		_, _ = w.ResponseWriter.Write(append(body, '\n'))
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *methodErrorWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming responses (metrics) working through the wrapper.
func (w *methodErrorWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(apiError{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

// requireReadToken guards the read endpoints that expose personal data (IP
// addresses, user agents): the read token or the publish token must be
// sent, and with neither configured they stay closed.
func (m *Master) requireReadToken(next http.HandlerFunc) http.HandlerFunc {
	var accepted [][]byte
	for _, t := range []string{m.readToken, m.publishToken} {
		if t != "" {
			accepted = append(accepted, []byte(t))
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tcprepl"`)
		if len(accepted) == 0 {
			writeError(w, http.StatusUnauthorized, r.URL.Path+" exposes personal data and no token opens it: set access.readTokenFile (or $"+masterapi.ReadTokenEnv+") or publishTokenFile, then send Authorization: Bearer <token>")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok {
			got := []byte(strings.TrimSpace(got))
			for _, want := range accepted {
				if subtle.ConstantTimeCompare(got, want) == 1 {
					w.Header().Del("WWW-Authenticate")
					next(w, r)
					return
				}
			}
		}
		writeError(w, http.StatusUnauthorized, "missing or wrong token: "+r.URL.Path+" needs the read token or the publish token as Authorization: Bearer <token>")
	}
}

// requireToken enforces the publish bearer token when one is configured.
func (m *Master) requireToken(next http.HandlerFunc) http.HandlerFunc {
	if m.publishToken == "" {
		return next
	}
	want := []byte(m.publishToken)
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tcprepl"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong publish token: send Authorization: Bearer <token>")
			return
		}
		next(w, r)
	}
}

func (m *Master) handlePublish(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	if !m.known[stream] {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown stream %q; GET /v1/streams lists the streams this master publishes", stream))
		return
	}
	// A browser sends a cross-site form POST without asking first, but
	// never one with Content-Type application/json: requiring it keeps a
	// web page from publishing through a visitor's browser.
	if ct := r.Header.Get("Content-Type"); !isJSONMediaType(ct) {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("publish needs Content-Type: application/json, got %q; send the rows as a JSON body with that header", ct))
		return
	}
	// The request's buffers (body, its re-encoding, the row slices) come
	// from a pool and go back once the reply is written: the log copies
	// the rows it keeps (AppendEncoded), and nothing else holds them.
	pb := getPublishBuf()
	defer putPublishBuf(pb)
	maxBytes := m.current.Load().Limits.MaxRequestBytes
	body, err := readBody(pb.body[:0], http.MaxBytesReader(w, r.Body, maxBytes), r.ContentLength)
	pb.body = body
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes: split the rows into smaller batches", maxBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	// One pass re-encodes the whole body as Python's json.dumps would (and
	// validates it); a second cuts the rows out of that fixed layout, ready
	// for the wire, splitting each into its fields for the row checks on
	// the way. This costs a fraction of decoding with encoding/json.
	enc, err := replication.AppendPythonJSON(slices.Grow(pb.enc[:0], len(body)+len(body)/8), body)
	if enc != nil {
		pb.enc = enc
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, `invalid JSON body: `+err.Error()+`; send {"rows": [[...], ...]}`)
		return
	}
	maxRows := m.MaxRows()
	check := func(i int, row json.RawMessage, fields [][]byte) error {
		if i >= maxRows {
			return m.tooManyRows(i + 1)
		}
		return m.checkRow(stream, i, row, fields)
	}
	rows, fields, err := appendPublishRows(pb.rows[:0], pb.fields[:0], enc, check)
	pb.rows, pb.fields = rows, fields
	var rowErr *RowError
	switch {
	case errors.Is(err, ErrTooManyRows):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	case errors.As(err, &rowErr):
		writeError(w, http.StatusBadRequest, "invalid row, nothing stored: "+err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid body: "+err.Error()+`; send {"rows": [[...], ...]}`)
		return
	case len(rows) == 0:
		writeError(w, http.StatusBadRequest, `"rows" is missing or empty: send {"rows": [[...], ...]} with at least one row`)
		return
	}
	token, err := m.appendRows(r.Context(), stream, rows)
	if err != nil {
		switch {
		case errors.Is(err, replication.ErrRowTooLong):
			writeError(w, http.StatusBadRequest, "invalid row, nothing stored: "+err.Error())
		case errors.Is(err, ErrShuttingDown):
			closeAfterReply(w)
			writeError(w, http.StatusServiceUnavailable, "master is shutting down; nothing stored, retry against the restarted master")
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			writeError(w, http.StatusServiceUnavailable, "publish did not complete: "+err.Error())
		case errors.Is(err, pglog.ErrFailed):
			// PostgreSQL is unreachable or this master was fenced: it
			// becomes a standby, and the publish may be retried against
			// whichever master is active.
			closeAfterReply(w)
			writeError(w, http.StatusServiceUnavailable, "stream log unavailable, nothing acknowledged: "+err.Error())
		default:
			m.logger.Error(err, "publish failed", "stream", stream, "rows", len(rows))
			writeError(w, http.StatusInternalServerError, "publish failed, nothing acknowledged: "+err.Error())
		}
		return
	}
	// The reply json.Marshal would write for masterapi.PublishResponse, without
	// reflection: {"token":N} and a newline.
	reply := append(strconv.AppendInt(append(pb.reply[:0], `{"token":`...), token, 10), "}\n"...)
	pb.reply = reply
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(reply)
}

// isJSONMediaType reports whether a Content-Type header names JSON
// (application/json, with or without parameters such as charset).
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// publishBuf holds one publish request's buffers between requests.
type publishBuf struct {
	body   []byte
	enc    []byte
	rows   []json.RawMessage
	fields [][]byte
	reply  []byte
}

// maxPooledBody is the largest body whose buffers go back to the pool; a
// rare huge request should not pin its memory.
const maxPooledBody = 1 << 20

var publishBufs = sync.Pool{New: func() any { return new(publishBuf) }}

func getPublishBuf() *publishBuf { return publishBufs.Get().(*publishBuf) }

func putPublishBuf(pb *publishBuf) {
	if cap(pb.body) > maxPooledBody || cap(pb.enc) > maxPooledBody+maxPooledBody/4 || cap(pb.rows) > maxPooledBody/16 || cap(pb.fields) > maxPooledBody/16 {
		return
	}
	clear(pb.rows[:cap(pb.rows)]) // drop references into enc
	clear(pb.fields[:cap(pb.fields)])
	publishBufs.Put(pb)
}

// bodyPresize is the most readBody allocates before bytes arrive.
const bodyPresize = 64 << 10

// readBody is io.ReadAll into dst. The buffer grows as bytes arrive,
// doubling: the request's Content-Length is only a hint for the first
// bodyPresize bytes, since a client can declare any length and send nothing
// (300 such requests once took 2 GiB).
func readBody(dst []byte, r io.Reader, contentLength int64) ([]byte, error) {
	b := dst[:0]
	if contentLength > 0 {
		// One byte more, so the read that sees EOF needs no growth.
		b = slices.Grow(b, int(min(contentLength, bodyPresize))+1)
	}
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, max(512, cap(b)))
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				return b, nil
			}
			return b, err
		}
	}
}

// appendPublishRows appends the rows of a body in AppendPythonJSON's form
// ({"rows": [row, ...]}: valid JSON with no whitespace but one space after
// each ',' and ':' outside strings) to rows. Each row is split into its
// fields in the same pass (into fieldBuf, reused row after row; nil for a
// row that is not an array) and handed to check with its index; an error
// from check stops the split and is returned.
func appendPublishRows(rows []json.RawMessage, fieldBuf [][]byte, enc []byte, check func(i int, row json.RawMessage, fields [][]byte) error) ([]json.RawMessage, [][]byte, error) {
	if len(enc) == 0 || enc[0] != '{' {
		return rows, fieldBuf, errors.New("the body must be a JSON object")
	}
	seen := false
	i := 1
	for enc[i] != '}' {
		keyEnd := jsonscan.SkipValue(enc, i)
		key := enc[i:keyEnd]
		valStart := keyEnd + len(": ")
		switch {
		case string(key) != `"rows"`:
			var name string
			_ = json.Unmarshal(key, &name)
			return rows, fieldBuf, fmt.Errorf("unknown field %q", name)
		case seen:
			return rows, fieldBuf, errors.New(`field "rows" given twice`)
		case enc[valStart] != '[':
			return rows, fieldBuf, errors.New(`"rows" must be an array of rows`)
		}
		seen = true
		j := valStart + 1
		for n := 0; enc[j] != ']'; n++ {
			var end int
			var fields [][]byte
			if enc[j] == '[' {
				end, fieldBuf = jsonscan.ArrayAt(enc, j, fieldBuf[:0])
				fields = fieldBuf
			} else {
				end = jsonscan.SkipValue(enc, j)
			}
			row := json.RawMessage(enc[j:end:end])
			if err := check(n, row, fields); err != nil {
				return rows, fieldBuf, err
			}
			rows = append(rows, row)
			j = end
			if enc[j] == ',' {
				j += len(", ")
			}
		}
		i = j + 1 // after the rows' ']'
		if enc[i] == ',' {
			i += len(", ")
		}
	}
	return rows, fieldBuf, nil
}

// StreamStatuses reports every stream's position from the log.
func (m *Master) StreamStatuses() []masterapi.StreamStatus {
	out := make([]masterapi.StreamStatus, 0, len(m.streams))
	for _, s := range m.streams {
		st, err := m.store.Stats(s)
		ss := masterapi.StreamStatus{Name: s, Token: st.CurrentToken, OldestToken: st.OldestToken, RowsPerSecond: st.RowsPerSecond, Rows: st.Rows}
		if err != nil {
			ss.Error = err.Error()
		}
		out = append(out, ss)
	}
	return out
}

func (m *Master) handleStreams(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"serverName": m.cfg.ServerName, "streams": m.StreamStatuses()}
	if li, ok := m.store.(replication.LogIdentity); ok {
		body["logId"] = li.LogID()
	}
	writeJSON(w, http.StatusOK, body)
}

// ConnectionTable builds the connection table: the protocol server's view
// of each connection, with lag computed against the log's positions and
// the publish time of the oldest token not yet sent.
func (m *Master) ConnectionTable() []masterapi.Connection {
	now := m.now()
	conns := m.srv.Connections()
	current := map[string]int64{}
	// Many connections usually sit at the same token of a stream: look
	// each publish time up once per table.
	type streamToken struct {
		stream string
		token  int64
	}
	behind := map[streamToken]float64{}
	out := make([]masterapi.Connection, 0, len(conns))
	for _, c := range conns {
		e := masterapi.Connection{
			ID: c.ID, Name: c.Name, RemoteAddr: c.RemoteAddr, State: c.State,
			Identity: c.Identity, Transport: c.Transport,
			ConnectedSince: c.ConnectedSince, Streams: make([]masterapi.ConnectionStream, 0, len(c.Subscriptions)),
			PendingCommands: c.PendingCmds, PendingBytes: c.PendingBytes,
			CommandsIn: c.CommandsIn, CommandsOut: c.CommandsOut,
			BytesIn: c.BytesIn, BytesOut: c.BytesOut, LastReceived: c.LastReceived,
			UptimeSeconds: now.Sub(c.ConnectedSince).Seconds(),
		}
		for _, sub := range c.Subscriptions {
			cur, ok := current[sub.Stream]
			if !ok {
				cur, _ = m.store.CurrentToken(sub.Stream)
				current[sub.Stream] = cur
			}
			cs := masterapi.ConnectionStream{Name: sub.Stream, State: sub.State, Token: sub.LastToken}
			if cur > sub.LastToken {
				cs.TokensBehind = cur - sub.LastToken
				k := streamToken{sub.Stream, sub.LastToken}
				secs, ok := behind[k]
				if !ok {
					secs = m.secondsBehind(now, sub.Stream, sub.LastToken)
					behind[k] = secs
				}
				cs.SecondsBehind = secs
			}
			e.MaxSecondsBehind = max(e.MaxSecondsBehind, cs.SecondsBehind)
			e.MaxTokensBehind = max(e.MaxTokensBehind, cs.TokensBehind)
			e.Streams = append(e.Streams, cs)
		}
		out = append(out, e)
	}
	return out
}

// secondsBehind is how long ago the first token after last was published:
// the age of the oldest row the connection has not been sent.
func (m *Master) secondsBehind(now time.Time, stream string, last int64) float64 {
	t, err := m.store.TokenTime(stream, last+1)
	if _, tooOld := errors.AsType[*replication.TokenTooOldError](err); tooOld {
		// Retention dropped it: the oldest token held is the best bound.
		st, serr := m.store.Stats(stream)
		if serr != nil {
			return 0
		}
		t, err = m.store.TokenTime(stream, st.OldestToken)
	}
	if err != nil {
		return 0
	}
	return max(0, now.Sub(t).Seconds())
}

// connectionSorts are the ?sort= values of /v1/connections, after NATS's
// /connz: identity and age ascending, load and lag descending (worst first).
var connectionSorts = map[string]func(a, b *masterapi.Connection) bool{
	"id":            func(a, b *masterapi.Connection) bool { return a.ID < b.ID },
	"name":          func(a, b *masterapi.Connection) bool { return a.Name < b.Name },
	"start":         func(a, b *masterapi.Connection) bool { return a.ConnectedSince.Before(b.ConnectedSince) },
	"uptime":        func(a, b *masterapi.Connection) bool { return a.UptimeSeconds > b.UptimeSeconds },
	"last":          func(a, b *masterapi.Connection) bool { return a.LastReceived.After(b.LastReceived) },
	"pending":       func(a, b *masterapi.Connection) bool { return a.PendingBytes > b.PendingBytes },
	"bytes_in":      func(a, b *masterapi.Connection) bool { return a.BytesIn > b.BytesIn },
	"bytes_out":     func(a, b *masterapi.Connection) bool { return a.BytesOut > b.BytesOut },
	"cmds_in":       func(a, b *masterapi.Connection) bool { return sum(a.CommandsIn) > sum(b.CommandsIn) },
	"cmds_out":      func(a, b *masterapi.Connection) bool { return sum(a.CommandsOut) > sum(b.CommandsOut) },
	"lag":           func(a, b *masterapi.Connection) bool { return a.MaxSecondsBehind > b.MaxSecondsBehind },
	"tokens_behind": func(a, b *masterapi.Connection) bool { return a.MaxTokensBehind > b.MaxTokensBehind },
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func sortNames() string {
	names := make([]string, 0, len(connectionSorts))
	for n := range connectionSorts {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// DefaultConnectionsLimit is the page size of /v1/connections, as NATS's.
const DefaultConnectionsLimit = 1024

func (m *Master) handleConnections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sortBy := q.Get("sort")
	if sortBy == "" {
		sortBy = "id"
	}
	less, ok := connectionSorts[sortBy]
	if !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown sort %q; use one of: %s", sortBy, sortNames()))
		return
	}
	limit, err := queryInt(q.Get("limit"), DefaultConnectionsLimit)
	if err != nil || limit < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q must be a non-negative integer", q.Get("limit")))
		return
	}
	offset, err := queryInt(q.Get("offset"), 0)
	if err != nil || offset < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("offset %q must be a non-negative integer", q.Get("offset")))
		return
	}
	conns := m.ConnectionTable()
	sort.SliceStable(conns, func(i, j int) bool {
		if less(&conns[i], &conns[j]) {
			return true
		}
		if less(&conns[j], &conns[i]) {
			return false
		}
		return conns[i].ID < conns[j].ID
	})
	resp := masterapi.ConnectionsResponse{Now: m.now(), Total: len(conns), Offset: offset, Limit: limit, Sort: sortBy}
	if offset < len(conns) {
		conns = conns[offset:]
	} else {
		conns = nil
	}
	if len(conns) > limit {
		conns = conns[:limit]
	}
	resp.Connections = conns
	if resp.Connections == nil {
		resp.Connections = []masterapi.Connection{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func queryInt(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}

// UserIPsResponse is the body of GET /v1/userips.
type UserIPsResponse struct {
	UserIPs []UserIP `json:"userIPs"`
}

func (m *Master) handleUserIPs(w http.ResponseWriter, r *http.Request) {
	limit, err := queryInt(r.URL.Query().Get("limit"), 1000)
	if err != nil || limit < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q must be a non-negative integer", r.URL.Query().Get("limit")))
		return
	}
	ips := m.effects.ips.list(r.URL.Query().Get("user"))
	if len(ips) > limit {
		ips = ips[:limit]
	}
	writeJSON(w, http.StatusOK, UserIPsResponse{UserIPs: ips})
}

// closeAfterReply ends the client's keep-alive connection after this reply.
// A master that will not serve again (shutting down, fenced, a standby)
// must not keep a client that reached it through a Service: the proxy
// picked this pod when the connection was made and sticks to it, so the
// client's retries would all land here. A new connection goes where the
// Service routes now, to the active master.
func closeAfterReply(w http.ResponseWriter) { w.Header().Set("Connection", "close") }
