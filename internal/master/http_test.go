package master

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/masterapi"
	"github.com/tcprepl/tcprepl/internal/replication"
)

func do(t *testing.T, h http.Handler, method, path, body string, header ...string) (int, map[string]any, http.Header) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if ct := rec.Header().Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: reply is not JSON: %v: %q", method, path, err, rec.Body.String())
		}
	}
	return rec.Code, out, rec.Header()
}

func TestPublishErrors(t *testing.T) {
	m, log, srv, _ := newFakeMaster(t, masterapi.Config{Limits: masterapi.Limits{MaxRequestBytes: 200}})
	m.readToken = "rt"
	h := m.Handler()
	tests := []struct {
		name, method, path, body string
		code                     int
		errHas                   string
	}{
		{"bad JSON", "POST", "/v1/streams/caches/rows", `{"rows": [`, 400, "invalid JSON body"},
		{"not an object", "POST", "/v1/streams/caches/rows", `[1,2]`, 400, "must be a JSON object"},
		{"rows not an array", "POST", "/v1/streams/caches/rows", `{"rows": 5}`, 400, "must be an array"},
		{"rows twice", "POST", "/v1/streams/caches/rows", `{"rows": [["a"]], "rows": [["b"]]}`, 400, "twice"},
		{"invalid UTF-8", "POST", "/v1/streams/caches/rows", "{\"rows\": [[\"\xff\"]]}", 400, "invalid JSON body"},
		{"unknown field", "POST", "/v1/streams/caches/rows", `{"row": [["a"]]}`, 400, `unknown field "row"`},
		{"trailing data", "POST", "/v1/streams/caches/rows", `{"rows": [["a"]]} {}`, 400, "data after"},
		{"no rows", "POST", "/v1/streams/caches/rows", `{"rows": []}`, 400, "missing or empty"},
		{"missing rows", "POST", "/v1/streams/caches/rows", `{}`, 400, "missing or empty"},
		{"unknown stream", "POST", "/v1/streams/nope/rows", `{"rows": [["a"]]}`, 404, `unknown stream "nope"`},
		{"federation disabled", "POST", "/v1/streams/federation/rows", `{"rows": [["a", {}]]}`, 404, "unknown stream"},
		{"bad row in batch", "POST", "/v1/streams/caches/rows", `{"rows": [["a"], {"x": 1}]}`, 400, "row 1:"},
		{"too large", "POST", "/v1/streams/caches/rows", `{"rows": [["` + strings.Repeat("x", 300) + `"]]}`, 413, "over 200 bytes"},
		{"method not allowed", "GET", "/v1/streams/caches/rows", ``, 405, "allowed: POST"},
		{"method not allowed on list", "DELETE", "/v1/streams", ``, 405, "allowed: GET"},
		{"no such endpoint", "GET", "/v2/nothing", ``, 404, "no such endpoint"},
		{"bad sort", "GET", "/v1/connections?sort=bogus", ``, 400, "unknown sort"},
		{"bad limit", "GET", "/v1/connections?limit=-1", ``, 400, "limit"},
		{"bad offset", "GET", "/v1/connections?offset=x", ``, 400, "offset"},
		{"bad userips limit", "GET", "/v1/userips?limit=x", ``, 400, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := do(t, h, tc.method, tc.path, tc.body, "Authorization", "Bearer rt")
			if code != tc.code {
				t.Fatalf("code %d, want %d (body %v)", code, tc.code, body)
			}
			msg, _ := body["error"].(string)
			if !strings.Contains(msg, tc.errHas) {
				t.Fatalf("error %q does not contain %q", msg, tc.errHas)
			}
		})
	}
	if rows := log.rows("caches"); len(rows) != 0 {
		t.Fatalf("failed requests stored rows: %v", rows)
	}
	if len(srv.tokens("caches")) != 0 {
		t.Fatalf("failed requests published")
	}
}

func TestPublishStoresAndFansOut(t *testing.T) {
	m, log, srv, _ := newFakeMaster(t, masterapi.Config{})
	h := m.Handler()
	for i, want := range []float64{1, 2} {
		code, body, _ := do(t, h, "POST", "/v1/streams/caches/rows", `{"rows": [["f",["k"],1],["g",  ["\u00e9"], 2]]}`)
		if code != 200 || body["token"] != want {
			t.Fatalf("publish %d: %d %v, want token %v", i, code, body, want)
		}
	}
	// Stored and sent in Python's json.dumps form, batch kept together.
	rows := log.rows("caches")
	if len(rows) != 4 || rows[0] != `["f", ["k"], 1]` || rows[1] != `["g", ["\u00e9"], 2]` {
		t.Fatalf("stored rows %q", rows)
	}
	if got := srv.tokens("caches"); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("published tokens %v", got)
	}
}

func TestPublishRowTooLongForALine(t *testing.T) {
	m, srv := newLogMaster(t, masterapi.Config{Limits: masterapi.Limits{MaxLineLength: 1024}})
	// "RDATA caches " + 19 token digits + " " leaves 991 bytes for the row.
	row := func(n int) json.RawMessage { return json.RawMessage(`["` + strings.Repeat("x", n-4) + `"]`) }
	if _, err := m.Publish(context.Background(), "caches", []json.RawMessage{row(991)}); err != nil {
		t.Fatalf("a row that fits the line was refused: %v", err)
	}
	_, err := m.Publish(context.Background(), "caches", []json.RawMessage{json.RawMessage(`["ok"]`), row(992)})
	if !errors.Is(err, replication.ErrRowTooLong) || !strings.Contains(err.Error(), "row 1: ") || !strings.Contains(err.Error(), "line limit of 1024") {
		t.Fatalf("err = %v, want row 1 over the line limit", err)
	}
	code, reply, _ := do(t, m.Handler(), "POST", "/v1/streams/caches/rows", `{"rows": [`+string(row(992))+`]}`)
	if msg, _ := reply["error"].(string); code != 400 || !strings.Contains(msg, "invalid row, nothing stored: ") || !strings.Contains(msg, "line limit of 1024") {
		t.Fatalf("over-long row over HTTP: %d %q, want 400 naming the line limit", code, msg)
	}
	if cur, _ := m.store.CurrentToken("caches"); cur != 1 {
		t.Fatalf("current token %d: a batch with an over-long row was partly stored", cur)
	}
	if n := len(srv.tokens("caches")); n != 1 {
		t.Fatalf("%d tokens reached the server, want 1", n)
	}
}

func TestPublishToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, log, _, _ := newFakeMaster(t, masterapi.Config{PublishTokenFile: file})
	h := m.Handler()
	body := `{"rows": [["a"]]}`
	for _, tc := range []struct {
		name, auth string
		code       int
	}{
		{"missing", "", 401},
		{"wrong", "Bearer nope", 401},
		{"wrong scheme", "Basic czNjcmV0", 401},
		{"right", "Bearer s3cret", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, resp, hdr := do(t, h, "POST", "/v1/streams/caches/rows", body, "Authorization", tc.auth)
			if code != tc.code {
				t.Fatalf("code %d, want %d: %v", code, tc.code, resp)
			}
			if code == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	if n := len(log.rows("caches")); n != 1 {
		t.Fatalf("%d rows stored, want only the authorised one", n)
	}
	// Reads need no token.
	if code, _, _ := do(t, h, "GET", "/v1/streams", ""); code != 200 {
		t.Fatalf("GET /v1/streams with a token configured: %d", code)
	}
}

func TestPublishTokenFromEnv(t *testing.T) {
	t.Setenv(masterapi.PublishTokenEnv, "envtok")
	m, _, _, _ := newFakeMaster(t, masterapi.Config{})
	h := m.Handler()
	if code, _, _ := do(t, h, "POST", "/v1/streams/caches/rows", `{"rows": [["a"]]}`); code != 401 {
		t.Fatalf("without token: %d, want 401", code)
	}
	if code, _, _ := do(t, h, "POST", "/v1/streams/caches/rows", `{"rows": [["a"]]}`, "Authorization", "Bearer envtok"); code != 200 {
		t.Fatalf("with token: %d, want 200", code)
	}
}

func TestPublishLogFailure(t *testing.T) {
	m, log, srv, _ := newFakeMaster(t, masterapi.Config{})
	log.failNext = errors.New("disk on fire")
	code, body, _ := do(t, m.Handler(), "POST", "/v1/streams/caches/rows", `{"rows": [["a"]]}`)
	if code != 500 || !strings.Contains(body["error"].(string), "disk on fire") {
		t.Fatalf("%d %v", code, body)
	}
	// The next publish still goes through and is published.
	if code, _, _ := do(t, m.Handler(), "POST", "/v1/streams/caches/rows", `{"rows": [["a"]]}`); code != 200 {
		t.Fatalf("after failure: %d", code)
	}
	if got := srv.tokens("caches"); len(got) != 1 || got[0] != 1 {
		t.Fatalf("published %v", got)
	}
}

func TestPublishAfterShutdown(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{})
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := m.Publish(context.Background(), "caches", []json.RawMessage{json.RawMessage(`["a"]`)})
	if !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("err = %v", err)
	}
	code, body, _ := do(t, m.Handler(), "POST", "/v1/streams/caches/rows", `{"rows": [["a"]]}`)
	if code != 503 {
		t.Fatalf("%d %v", code, body)
	}
}

func TestStreamsEndpoint(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{Federation: true, CustomStreams: []masterapi.CustomStream{{Name: "my_stream"}}})
	h := m.Handler()
	do(t, h, "POST", "/v1/streams/my_stream/rows", `{"rows": [["a"], ["b"]]}`)
	code, body, _ := do(t, h, "GET", "/v1/streams", "")
	if code != 200 {
		t.Fatal(code)
	}
	streams := body["streams"].([]any)
	if len(streams) != 17 {
		t.Fatalf("%d streams, want 16 standard + 1 custom", len(streams))
	}
	last := streams[16].(map[string]any)
	if last["name"] != "my_stream" || last["token"] != 1.0 || last["oldestToken"] != 1.0 || last["rows"] != 2.0 {
		t.Fatalf("custom stream: %v", last)
	}
	if body["serverName"] != "test.example" {
		t.Fatalf("serverName %v", body["serverName"])
	}
}

func TestConnectionsEndpoint(t *testing.T) {
	m, _, srv, clock := newFakeMaster(t, masterapi.Config{})
	ctx := context.Background()
	t0 := clock.Now()
	for i := range 3 {
		if _, err := m.Publish(ctx, "events", []json.RawMessage{json.RawMessage(`["ev", ["$e", "!r", "m.room.message", null, null, null]]`)}); err != nil {
			t.Fatal(err)
		}
		_ = i
		clock.Advance(10 * time.Second)
	}
	// Now t0+30s; tokens 1,2,3 published at t0, t0+10s, t0+20s.
	srv.conns = []ConnInfo{
		{ID: 7, Name: "synchrotron", RemoteAddr: "10.0.0.7:5555", State: "connected", ConnectedSince: t0,
			Subscriptions: []SubInfo{{Stream: "events", State: "live", LastToken: 1}, {Stream: "caches", State: "live", LastToken: 0}},
			PendingCmds:   4, PendingBytes: 400, CommandsIn: map[string]uint64{"PING": 2}, CommandsOut: map[string]uint64{"RDATA": 9}, BytesOut: 900},
		{ID: 3, Name: "federation_sender", RemoteAddr: "10.0.0.3:5555", State: "connected", ConnectedSince: t0.Add(time.Second),
			Subscriptions: []SubInfo{{Stream: "events", State: "live", LastToken: 3}}, BytesOut: 10},
	}
	h := m.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/connections", nil))
	var resp masterapi.ConnectionsResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Total != 2 || len(resp.Connections) != 2 || resp.Connections[0].ID != 3 {
		t.Fatalf("default sort by id: %+v", resp)
	}
	c := resp.Connections[1]
	ev := c.Streams[0]
	// Last sent 1; token 2 was published at t0+10s, now is t0+30s.
	if ev.Name != "events" || ev.Token != 1 || ev.TokensBehind != 2 || ev.SecondsBehind != 20 {
		t.Fatalf("events lag: %+v", ev)
	}
	if c.Streams[1].TokensBehind != 0 || c.MaxSecondsBehind != 20 || c.MaxTokensBehind != 2 || c.PendingCommands != 4 || c.CommandsOut["RDATA"] != 9 {
		t.Fatalf("connection: %+v", c)
	}
	if resp.Connections[0].MaxSecondsBehind != 0 {
		t.Fatalf("caught-up connection lags: %+v", resp.Connections[0])
	}

	for _, tc := range []struct {
		query string
		ids   []uint64
		total int
	}{
		{"?sort=lag", []uint64{7, 3}, 2},
		{"?sort=bytes_out", []uint64{7, 3}, 2},
		{"?sort=name", []uint64{3, 7}, 2},
		{"?sort=start", []uint64{7, 3}, 2},
		{"?sort=pending&limit=1", []uint64{7}, 2},
		{"?sort=id&offset=1", []uint64{7}, 2},
		{"?offset=5", []uint64{}, 2},
		{"?limit=0", []uint64{}, 2},
	} {
		t.Run(tc.query, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/connections"+tc.query, nil))
			var resp masterapi.ConnectionsResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != 200 {
				t.Fatalf("%d %v %s", rec.Code, err, rec.Body)
			}
			var ids []uint64
			for _, c := range resp.Connections {
				ids = append(ids, c.ID)
			}
			if resp.Total != tc.total || len(ids) != len(tc.ids) {
				t.Fatalf("ids %v total %d, want %v", ids, resp.Total, tc.ids)
			}
			for i := range ids {
				if ids[i] != tc.ids[i] {
					t.Fatalf("ids %v, want %v", ids, tc.ids)
				}
			}
		})
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{})
	h := m.Handler()
	if code, _, _ := do(t, h, "GET", "/healthz", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _, _ := do(t, h, "GET", "/readyz", ""); code != 503 {
		t.Fatalf("readyz before serving: %d, want 503", code)
	}
	if _, err := m.Publish(context.Background(), "typing", []json.RawMessage{json.RawMessage(`["!r", []]`)}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`tcprepl_master_stream_position{stream="typing"} 1`,
		`tcprepl_master_published_rows_total{stream="typing"} 1`,
		`tcprepl_master_publish_duration_seconds_count 1`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestConcurrentPublishOrder: many publishers on one stream; the server
// must see every token once, in order, whatever order Append returns in.
func TestConcurrentPublishOrder(t *testing.T) {
	m, _, srv, _ := newFakeMaster(t, masterapi.Config{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := m.Publish(context.Background(), "caches", []json.RawMessage{json.RawMessage(`["a"]`)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := srv.tokens("caches")
	if len(got) != 1600 {
		t.Fatalf("%d published", len(got))
	}
	for i, tok := range got {
		if tok != int64(i+1) {
			t.Fatalf("token %d at position %d", tok, i)
		}
	}
}

// splitPublishBody is appendPublishRows with no row checks.
func splitPublishBody(enc []byte) ([]json.RawMessage, error) {
	rows, _, err := appendPublishRows(nil, nil, enc, func(int, json.RawMessage, [][]byte) error { return nil })
	return rows, err
}

func TestSplitPublishBody(t *testing.T) {
	tests := map[string]struct {
		body string
		want []string
	}{
		"no rows":         {`{"rows": []}`, nil},
		"no field":        {`{}`, nil},
		"compact":         {`{"rows":[["a"]]}`, []string{`["a"]`}},
		"string tricks":   {` { "rows" : [ ["a]\"},[", ["x, y"], {"k": "}"}], [1.5e3,null,true] , ["\u00e9\ud83d\ude00"] ] } `, []string{`["a]\"},[", ["x, y"], {"k": "}"}]`, `[1.5e3, null, true]`, `["\u00e9\ud83d\ude00"]`}},
		"scalars as rows": {`{"rows": [1, "x", {"a": [2]}]}`, []string{`1`, `"x"`, `{"a": [2]}`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			enc, err := replication.AppendPythonJSON(nil, []byte(tc.body))
			if err != nil {
				t.Fatalf("%s: %v", tc.body, err)
			}
			rows, err := splitPublishBody(enc)
			if err != nil {
				t.Fatalf("%s: %v", tc.body, err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, string(r))
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("%s: rows %q, want %q", tc.body, got, tc.want)
			}
		})
	}
}

// TestSplitPublishBodyFields: each row's fields come out of the same pass,
// as the row checks see them.
func TestSplitPublishBodyFields(t *testing.T) {
	enc, err := replication.AppendPythonJSON(nil, []byte(`{"rows": [["a", [1, 2], {"b": "]"}], [], 7]}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	_, _, err = appendPublishRows(nil, nil, enc, func(i int, row json.RawMessage, fields [][]byte) error {
		var fs []string
		for _, f := range fields {
			fs = append(fs, string(f))
		}
		got = append(got, fmt.Sprintf("%d %s nil=%v %q", i, row, fields == nil, fs))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`0 ["a", [1, 2], {"b": "]"}] nil=false ["\"a\"" "[1, 2]" "{\"b\": \"]\"}"]`,
		`1 [] nil=false []`,
		`2 7 nil=true []`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("rows and fields:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// FuzzSplitPublishBody: whatever JSON a client sends, the split agrees
// with encoding/json's decoding of the same body: a body is accepted when
// it is an object whose only field, given once, is an array "rows"; and
// then the rows are the elements encoding/json decodes, in order, each in
// Python's json.dumps form. A dropped, reordered or altered row fails.
func FuzzSplitPublishBody(f *testing.F) {
	for _, s := range []string{`{"rows": [["a"]]}`, `{}`, `[]`, `"x"`, `{"rows": [[1, {"a": "]"}]], "x": 1}`, `{"a": {"b": [1]}}`, `{"rows": ["\"", 2, null]}`,
		`{"rows": [["a"]], "rows": [["b"]]}`, `{"r\u006fws": [[1], [2]]}`, `{"rows": null}`, `{"rows": [[], [[]], ["x\\", "y"]]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		enc, err := replication.AppendPythonJSON(nil, body)
		if err != nil {
			return // refused before the split (tested with the encoder)
		}
		rows, err := splitPublishBody(enc)
		want, ok := decodePublishBody(t, body)
		if !ok {
			if err == nil {
				t.Fatalf("split accepted %q (rows %q), encoding/json does not", body, rows)
			}
			return
		}
		if err != nil {
			t.Fatalf("split refused %q: %v; encoding/json decodes %d rows", body, err, len(want))
		}
		if len(rows) != len(want) {
			t.Fatalf("split found %d rows in %q, encoding/json %d", len(rows), body, len(want))
		}
		for i := range want {
			wire, err := replication.AppendPythonJSON(nil, want[i])
			if err != nil {
				t.Fatalf("row %d %q: %v", i, want[i], err)
			}
			if string(rows[i]) != string(wire) {
				t.Fatalf("row %d of %q: split %q, encoding/json %q", i, body, rows[i], wire)
			}
		}
	})
}

// decodePublishBody is the fuzz oracle: encoding/json's reading of a
// publish body. ok is false unless the body is an object whose only key,
// given once, is "rows", holding an array.
func decodePublishBody(t *testing.T, body []byte) (rows []json.RawMessage, ok bool) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(body))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	seen := false
	for d.More() {
		key, err := d.Token()
		if err != nil {
			t.Fatalf("encoding/json: key of %q: %v", body, err)
		}
		var val json.RawMessage
		if err := d.Decode(&val); err != nil {
			t.Fatalf("encoding/json: value of %q: %v", body, err)
		}
		if key != "rows" || seen || val[0] != '[' {
			return nil, false
		}
		seen = true
		if err := json.Unmarshal(val, &rows); err != nil {
			t.Fatalf("encoding/json: rows of %q: %v", body, err)
		}
	}
	return rows, true
}

// TestSecondsBehindAfterTrim: a connection whose next token was trimmed is
// as far behind as the oldest token held, not zero.
func TestSecondsBehindAfterTrim(t *testing.T) {
	m, log, srv, clock := newFakeMaster(t, masterapi.Config{})
	for range 3 {
		if _, err := m.Publish(t.Context(), "typing", []json.RawMessage{json.RawMessage(`["!r", []]`)}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
	}
	if err := log.Trim("typing", 2); err != nil {
		t.Fatal(err)
	}
	clock.Advance(7 * time.Second)
	srv.conns = []ConnInfo{{ID: 1, Subscriptions: []SubInfo{{Stream: "typing", LastToken: 0}}}, {ID: 2, Subscriptions: []SubInfo{{Stream: "typing", LastToken: 0}}}}
	for _, c := range m.ConnectionTable() {
		// Token 3 was published at t0+2s; now is t0+10s.
		if s := c.Streams[0]; s.TokensBehind != 3 || s.SecondsBehind != 8 {
			t.Fatalf("connection %d: %+v", c.ID, s)
		}
	}
}

// TestPublishBodyBuffers: the handler reads bodies of unknown or wrong
// length, refuses one over the limit without a Content-Length, and keeps
// what it stored intact while it reuses its request buffers for later
// publishes.
func TestPublishBodyBuffers(t *testing.T) {
	m, log, _, _ := newFakeMaster(t, masterapi.Config{Limits: masterapi.Limits{MaxRequestBytes: 4096}})
	h := m.Handler()
	post := func(body string, contentLength int64) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/v1/streams/caches/rows", io.MultiReader(strings.NewReader(body)))
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = contentLength
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var want []string
	var wg sync.WaitGroup
	for i := range 40 {
		row := fmt.Sprintf(`["c%d", ["%s"], %d]`, i, strings.Repeat("k", i*50), i)
		body := `{"rows": [` + row + `]}`
		cl := int64(len(body))
		switch i % 3 {
		case 1:
			cl = -1 // unknown (chunked)
		case 2:
			cl = 1 // too small a hint: the buffer must grow
		}
		want = append(want, row)
		wg.Go(func() {
			rec := post(body, cl)
			if rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), `{"token":`) || rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("publish %d: %d %q", i, rec.Code, rec.Body)
			}
		})
	}
	wg.Wait()
	got := log.rows("caches")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("stored rows differ:\n got %q\nwant %q", got, want)
	}
	if rec := post(`{"rows": [["`+strings.Repeat("x", 5000)+`"]]}`, -1); rec.Code != 413 {
		t.Fatalf("over the limit without Content-Length: %d %s", rec.Code, rec.Body)
	}
	// The reply is what encoding/json writes for masterapi.PublishResponse.
	rec := post(`{"rows": [["z", [], 1]]}`, -1)
	var resp masterapi.PublishResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Token != 41 {
		t.Fatalf("reply %q: %v", rec.Body, err)
	}
	if want, _ := json.Marshal(resp); rec.Body.String() != string(want)+"\n" {
		t.Fatalf("reply %q, want %q", rec.Body, string(want)+"\n")
	}
}
