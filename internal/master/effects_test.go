package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

func presenceRows(t *testing.T, log *memLog) [][]any {
	t.Helper()
	var out [][]any
	for _, r := range log.rows("presence") {
		var row []any
		if err := json.Unmarshal([]byte(r), &row); err != nil {
			t.Fatal(err)
		}
		out = append(out, row)
	}
	return out
}

func TestUserSyncPresence(t *testing.T) {
	m, log, _, clock := newFakeMaster(t, masterapi.Config{})
	e := m.effects
	now := float64(clock.Now().UnixMilli())
	type step struct {
		conn   uint64
		user   string
		active bool
		closed bool // ConnectionClosed(conn) instead of a USER_SYNC
		// want is the states of the rows this step writes.
		want []string
	}
	steps := []step{
		{conn: 1, user: "@a:x", active: true, want: []string{"@a:x online"}},
		{conn: 1, user: "@a:x", active: true},  // still syncing: no change
		{conn: 2, user: "@a:x", active: true},  // also on another worker
		{conn: 1, user: "@a:x", active: false}, // still online via conn 2
		{conn: 2, user: "@b:x", active: false}, // end without start: ignored
		{conn: 2, user: "@b:x", active: true, want: []string{"@b:x online"}},
		{conn: 3, user: "@c:x", active: true, want: []string{"@c:x online"}},
		{conn: 2, closed: true, want: []string{"@a:x offline", "@b:x offline"}}, // lost connection ends its syncs, one batch
		{conn: 3, user: "@c:x", active: false, want: []string{"@c:x offline"}},
		{conn: 3, closed: true}, // nothing left on it
	}
	seen := 0
	for i, st := range steps {
		if st.closed {
			e.ConnectionClosed(st.conn)
		} else if err := e.UserSync(st.conn, st.user, st.active, 1234); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		rows := presenceRows(t, log)
		var got []string
		for _, r := range rows[seen:] {
			got = append(got, fmt.Sprintf("%s %s", r[0], r[1]))
		}
		seen = len(rows)
		if !slices.Equal(got, st.want) {
			t.Fatalf("step %d (%+v): rows %v, want %v", i, st, got, st.want)
		}
	}
	rows := presenceRows(t, log)
	want := []any{"@a:x", "online", now, now, 1234.0, nil, true}
	if fmt.Sprint(rows[0]) != fmt.Sprint(want) {
		t.Fatalf("row %v, want %v", rows[0], want)
	}
	if rows[4][6] != false {
		t.Fatalf("offline row currently_active %v", rows[4][6])
	}
	// The two offline rows of the closed connection share one token.
	if n := len(log.updates["presence"]); n != 5 {
		t.Fatalf("%d presence tokens, want 5", n)
	}
	if online := e.Online(); len(online) != 0 {
		t.Fatalf("still online: %v", online)
	}
}

func TestUserSyncUndoneWhenPresenceCannotBeWritten(t *testing.T) {
	m, log, _, _ := newFakeMaster(t, masterapi.Config{})
	e := m.effects
	log.failNext = errors.New("disk full")
	if err := e.UserSync(1, "@a:x", true, 1); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v", err)
	}
	if online := e.Online(); len(online) != 0 {
		t.Fatalf("online without a presence row: %v", online)
	}
	// The worker's next start is a real change again and is written.
	if err := e.UserSync(1, "@a:x", true, 2); err != nil {
		t.Fatal(err)
	}
	log.failNext = errors.New("disk full")
	if err := e.UserSync(1, "@a:x", false, 3); err == nil {
		t.Fatal("end with a failing log succeeded")
	}
	if online := e.Online(); len(online) != 1 {
		t.Fatalf("offline without a presence row: %v", online)
	}
	// The connection closing writes the offline row after all.
	e.ConnectionClosed(1)
	var states []string
	for _, r := range presenceRows(t, log) {
		states = append(states, fmt.Sprint(r[1]))
	}
	if strings.Join(states, ",") != "online,offline" {
		t.Fatalf("presence rows %v", states)
	}
}

func TestFederationAck(t *testing.T) {
	for _, tc := range []struct {
		name       string
		federation bool
		ack        int64
		wantTrims  []int64
	}{
		{"trims up to the ack", true, 2, []int64{2}},
		{"never past the current token", true, 99, []int64{3}},
		{"zero is a no-op", true, 0, nil},
		{"federation disabled: nothing to trim", false, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, log, _, _ := newFakeMaster(t, masterapi.Config{Federation: tc.federation})
			if tc.federation {
				for range 3 {
					if _, err := m.Publish(t.Context(), "federation", []json.RawMessage{json.RawMessage(`["edu", {}]`)}); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := m.effects.FederationAck(tc.ack); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(log.trims, tc.wantTrims) {
				t.Fatalf("trims %v, want %v", log.trims, tc.wantTrims)
			}
		})
	}
}

func TestRemovePusherAndInvalidateCache(t *testing.T) {
	m, log, srv, clock := newFakeMaster(t, masterapi.Config{})
	if err := m.effects.RemovePusher("app", "key 1", "@u:x"); err != nil {
		t.Fatal(err)
	}
	if got := log.rows("pushers"); !slices.Equal(got, []string{`["@u:x", "app", "key 1", true]`}) {
		t.Fatalf("pushers rows %q", got)
	}
	if err := m.effects.InvalidateCache("get_user_by_id", json.RawMessage(`["@a:x","\u00e9"]`)); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`["get_user_by_id", ["@a:x", "\u00e9"], %d]`, clock.Now().UnixMilli())
	if got := log.rows("caches"); !slices.Equal(got, []string{want}) {
		t.Fatalf("caches rows %q, want %q", got, want)
	}
	if got := srv.tokens("caches"); !slices.Equal(got, []int64{1}) {
		t.Fatalf("caches row not fanned out: %v", got)
	}
	if err := m.effects.InvalidateCache("f", json.RawMessage(`[1,`)); err == nil {
		t.Fatal("invalid keys accepted")
	}
	if n := len(log.rows("caches")); n != 1 {
		t.Fatalf("invalid keys stored a row")
	}
}

func TestUserIPTable(t *testing.T) {
	m, _, _, _ := newFakeMaster(t, masterapi.Config{Limits: masterapi.Limits{MaxUserIPs: 3}})
	dev := "DEV"
	e := m.effects
	e.UserIP("@a:x", "1.1.1.1", "curl", &dev, 100)
	e.UserIP("@a:x", "1.1.1.1", "curl/2", &dev, 90) // older sighting arrives late
	e.UserIP("@a:x", "1.1.1.1", "curl", nil, 50)    // no device: its own entry
	e.UserIP("@b:x", "2.2.2.2", "ua", nil, 200)
	m.readToken = "rt"
	code, body, _ := do(t, m.Handler(), "GET", "/v1/userips?user=@a:x", "", "Authorization", "Bearer rt")
	if code != 200 {
		t.Fatal(code)
	}
	ips := body["userIPs"].([]any)
	if len(ips) != 2 {
		t.Fatalf("%v", ips)
	}
	first := ips[0].(map[string]any)
	if first["deviceId"] != "DEV" || first["lastSeen"] != 100.0 || first["userAgent"] != "curl/2" {
		t.Fatalf("first %v", first)
	}
	if _, leaked := first["accessToken"]; leaked {
		t.Fatal("access token exposed")
	}
	// A fourth distinct key evicts the least recently updated: @a with DEV
	// (updated before @a without a device and @b were first seen).
	e.UserIP("@c:x", "3.3.3.3", "ua", nil, 300)
	all := e.ips.list("")
	if len(all) != 3 || all[0].UserID != "@c:x" || all[1].UserID != "@b:x" || all[2].DeviceID != "" || all[2].LastSeen != 50 {
		t.Fatalf("after eviction: %+v", all)
	}
	code, body, _ = do(t, m.Handler(), "GET", "/v1/userips?limit=1", "", "Authorization", "Bearer rt")
	if code != 200 || len(body["userIPs"].([]any)) != 1 {
		t.Fatalf("limit: %d %v", code, body)
	}
}

// TestConnectionClosedSplitsPresence: a connection that drops with more
// users syncing than one publish may carry writes their offline rows in
// batches within the limit, every user once, in order.
func TestConnectionClosedSplitsPresence(t *testing.T) {
	m, log, _, _ := newFakeMaster(t, masterapi.Config{})
	e := m.effects
	users := 2*m.MaxRows() + 500
	for i := range users {
		if err := e.UserSync(1, fmt.Sprintf("@u%05d:x", i), true, 1); err != nil {
			t.Fatal(err)
		}
	}
	online := len(log.updates["presence"])
	e.ConnectionClosed(1)
	batches := log.updates["presence"][online:]
	if len(batches) != 3 {
		t.Fatalf("%d offline batches for %d users, want 3", len(batches), users)
	}
	next := 0
	for _, u := range batches {
		if len(u.Rows) > m.MaxRows() {
			t.Fatalf("token %d has %d rows, over the limit of %d", u.Token, len(u.Rows), m.MaxRows())
		}
		for _, r := range u.Rows {
			var row []any
			if err := json.Unmarshal(r, &row); err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("@u%05d:x", next); row[0] != want || row[1] != "offline" {
				t.Fatalf("offline row %d: %v, want %s offline", next, row, want)
			}
			next++
		}
	}
	if next != users {
		t.Fatalf("%d offline rows, want %d", next, users)
	}
}
