package master

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Effects gives client commands their effects on the master, as Synapse's
// 2020 master did (docs/api.md, "What client commands do"). The protocol
// server calls it from connection goroutines; every method is safe for
// concurrent use and never panics on client input.
type Effects struct {
	m      *Master
	logger logr.Logger

	// presenceMu serialises presence changes together with the write of
	// their rows, so the presence stream carries a user's transitions in
	// the order they happened.
	presenceMu sync.Mutex
	// syncing[conn][user] is the last sync time reported for user on conn.
	syncing map[uint64]map[string]int64
	// online[user] is the number of connections on which user is syncing.
	online map[string]int

	ips *userIPTable
}

func newEffects(m *Master) *Effects {
	return &Effects{
		m:       m,
		logger:  m.logger.WithName("effects"),
		syncing: map[uint64]map[string]int64{},
		online:  map[string]int{},
		ips:     newUserIPTable(m.cfg.Limits.MaxUserIPs),
	}
}

// effectTimeout bounds the durable write an effect makes, so a stuck disk
// cannot hold a connection's read loop forever.
const effectTimeout = 30 * time.Second

// UserSync records that user started (active) or stopped syncing on
// connection conn. A user is online while syncing on any connection; a
// presence row is written when that changes.
func (e *Effects) UserSync(conn uint64, user string, active bool, lastSyncMS int64) error {
	e.presenceMu.Lock()
	defer e.presenceMu.Unlock()
	users := e.syncing[conn]
	_, was := users[user]
	// The in-memory state follows what the log holds: when a presence row
	// cannot be written, the change is undone, so the worker's next
	// USER_SYNC (or the connection's close) tries again.
	switch {
	case active && !was:
		if users == nil {
			users = map[string]int64{}
			e.syncing[conn] = users
		}
		users[user] = lastSyncMS
		e.online[user]++
		if e.online[user] == 1 {
			if err := e.writePresence([]presenceChange{{user, true, lastSyncMS}}); err != nil {
				e.dropOnline(user)
				delete(users, user)
				if len(users) == 0 {
					delete(e.syncing, conn)
				}
				return err
			}
		}
	case active && was:
		users[user] = lastSyncMS
	case !active && was:
		last := users[user]
		delete(users, user)
		if len(users) == 0 {
			delete(e.syncing, conn)
		}
		if e.dropOnline(user) {
			if err := e.writePresence([]presenceChange{{user, false, lastSyncMS}}); err != nil {
				if e.syncing[conn] == nil {
					e.syncing[conn] = map[string]int64{}
				}
				e.syncing[conn][user] = last
				e.online[user]++
				return err
			}
		}
	}
	// Stopping a sync that never started changes nothing (Synapse ignored
	// it too): a worker may send "end" after a reconnect lost the "start".
	return nil
}

// ConnectionClosed ends the syncs of every user of a lost connection and
// writes offline rows, in one batch, for those not syncing elsewhere.
func (e *Effects) ConnectionClosed(conn uint64) {
	e.presenceMu.Lock()
	defer e.presenceMu.Unlock()
	users := e.syncing[conn]
	delete(e.syncing, conn)
	var changes []presenceChange
	for user, last := range users {
		if e.dropOnline(user) {
			changes = append(changes, presenceChange{user, false, last})
		}
	}
	if len(changes) == 0 {
		return
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].user < changes[j].user })
	if err := e.writePresence(changes); err != nil {
		e.logger.Error(err, "could not record users of a closed connection as offline", "connection", conn, "users", len(changes))
	}
}

func (e *Effects) dropOnline(user string) bool {
	e.online[user]--
	if e.online[user] <= 0 {
		delete(e.online, user)
		return true
	}
	return false
}

// Online lists the users currently online, sorted.
func (e *Effects) Online() []string {
	e.presenceMu.Lock()
	defer e.presenceMu.Unlock()
	out := make([]string, 0, len(e.online))
	for u := range e.online {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

type presenceChange struct {
	user       string
	online     bool
	lastSyncMS int64
}

// writePresence appends one presence row per change, as one token per
// Master.MaxRows changes: a connection that drops with thousands of users
// syncing must not make one batch that every subscriber's queue would
// count as thousands of commands at once. The row is [user_id, state,
// last_active_ts, last_federation_update_ts, last_user_sync_ts,
// status_msg, currently_active].
func (e *Effects) writePresence(changes []presenceChange) error {
	now := e.m.now().UnixMilli()
	var errs []error
	for batch := range slices.Chunk(changes, e.m.MaxRows()) {
		rows := make([]json.RawMessage, 0, len(batch))
		for _, c := range batch {
			state := "offline"
			if c.online {
				state = "online"
			}
			row, err := json.Marshal([]any{c.user, state, now, now, c.lastSyncMS, nil, c.online})
			if err != nil {
				return fmt.Errorf("encode presence row: %w", err)
			}
			rows = append(rows, row)
		}
		// A failed batch does not stop the next: each user's row is
		// independent, and as many as possible should be recorded.
		if err := e.publish("presence", rows); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Effects) publish(stream string, rows []json.RawMessage) error {
	ctx, cancel := context.WithTimeout(context.Background(), effectTimeout)
	defer cancel()
	_, err := e.m.Publish(ctx, stream, rows)
	return err
}

// FederationAck lets the master drop federation rows up to token: the
// federation sender has processed them. Without federation enabled there
// is no federation stream and the ack has nothing to trim.
func (e *Effects) FederationAck(token int64) error {
	if !e.m.cfg.Federation {
		return nil
	}
	cur, err := e.m.store.CurrentToken("federation")
	if err != nil {
		return fmt.Errorf("federation ack: %w", err)
	}
	// A sender cannot have processed rows that do not exist yet; never trim
	// past what has been published.
	upTo := min(token, cur)
	if upTo <= 0 {
		return nil
	}
	if err := e.m.store.Trim("federation", upTo); err != nil {
		return fmt.Errorf("trim federation stream up to %d: %w", upTo, err)
	}
	return nil
}

// RemovePusher writes a pushers row with deleted=true, which is how the
// deletion reaches every worker.
func (e *Effects) RemovePusher(appID, pushKey, userID string) error {
	row, err := json.Marshal([]any{userID, appID, pushKey, true})
	if err != nil {
		return fmt.Errorf("encode pushers row: %w", err)
	}
	return e.publish("pushers", []json.RawMessage{row})
}

// InvalidateCache relays a worker's cache invalidation to every connection
// as a caches row [cache_func, keys, invalidation_ts]. It goes through the
// log like any row, so a probe timing the round trip measures the real path.
func (e *Effects) InvalidateCache(cacheFunc string, keys json.RawMessage) error {
	if len(keys) == 0 {
		keys = json.RawMessage("null")
	}
	row := make([]byte, 0, len(cacheFunc)+len(keys)+32)
	fn, err := json.Marshal(cacheFunc)
	if err != nil {
		return fmt.Errorf("encode cache name: %w", err)
	}
	row = append(row, '[')
	row = append(row, fn...)
	row = append(row, ',')
	row = append(row, keys...)
	row = append(row, ',')
	row = fmt.Appendf(row, "%d]", e.m.now().UnixMilli())
	if !json.Valid(row) {
		return fmt.Errorf("INVALIDATE_CACHE %s: keys are not valid JSON", cacheFunc)
	}
	return e.publish("caches", []json.RawMessage{row})
}

// UserIP records that user was seen from ip with a device. The access
// token is deliberately not kept: /v1/userips is readable without auth.
func (e *Effects) UserIP(user, ip, userAgent string, deviceID *string, lastSeenMS int64) {
	dev := ""
	if deviceID != nil {
		dev = *deviceID
	}
	e.ips.record(UserIP{UserID: user, IP: ip, DeviceID: dev, UserAgent: userAgent, LastSeen: lastSeenMS})
}

// UserIP is the last sighting of one (user, IP, device).
type UserIP struct {
	UserID    string `json:"userId"`
	IP        string `json:"ip"`
	DeviceID  string `json:"deviceId"`
	UserAgent string `json:"userAgent"`
	// LastSeen is in milliseconds since the epoch, as the worker sent it.
	LastSeen int64 `json:"lastSeen"`
}

// userIPTable keeps the last sighting per (user, ip, device), bounded: the
// least recently updated entry goes when the table is full, so a flood of
// distinct IPs cannot exhaust memory.
type userIPTable struct {
	mu    sync.Mutex
	max   int
	order *list.List // front = most recently updated; values are *UserIP
	byKey map[string]*list.Element
}

func newUserIPTable(max int) *userIPTable {
	return &userIPTable{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

func userIPKey(u UserIP) string { return u.UserID + "\x00" + u.IP + "\x00" + u.DeviceID }

func (t *userIPTable) record(u UserIP) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := userIPKey(u)
	if el, ok := t.byKey[k]; ok {
		old := el.Value.(*UserIP)
		// Workers batch and may deliver sightings out of order: keep the latest.
		if u.LastSeen < old.LastSeen {
			u.LastSeen = old.LastSeen
		}
		*old = u
		t.order.MoveToFront(el)
		return
	}
	t.byKey[k] = t.order.PushFront(&u)
	for t.order.Len() > t.max {
		last := t.order.Back()
		t.order.Remove(last)
		delete(t.byKey, userIPKey(*last.Value.(*UserIP)))
	}
}

// list returns the sightings of user (all users when empty), most recent first.
func (t *userIPTable) list(user string) []UserIP {
	t.mu.Lock()
	out := make([]UserIP, 0, t.order.Len())
	for el := t.order.Front(); el != nil; el = el.Next() {
		u := *el.Value.(*UserIP)
		if user == "" || u.UserID == user {
			out = append(out, u)
		}
	}
	t.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].LastSeen != out[j].LastSeen {
			return out[i].LastSeen > out[j].LastSeen
		}
		return strings.Compare(userIPKey(out[i]), userIPKey(out[j])) < 0
	})
	return out
}
