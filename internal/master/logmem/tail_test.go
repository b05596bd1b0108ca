package logmem

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// summary renders updates as "token:row|row token:row" for compact asserts.
func summary(us []replication.Update) string {
	parts := make([]string, len(us))
	for i, u := range us {
		rows := make([]string, len(u.Rows))
		for j, r := range u.Rows {
			rows[j] = string(r)
		}
		parts[i] = fmt.Sprintf("%d:%s", u.Token, strings.Join(rows, "|"))
	}
	return strings.Join(parts, " ")
}

func TestTailCacheUnit(t *testing.T) {
	up := func(tok int64) replication.Update {
		return replication.Update{Stream: "s", Token: tok, Rows: []json.RawMessage{json.RawMessage(fmt.Sprintf("[%d]", tok))}, Time: time.Unix(tok, 0)}
	}
	t.Run("gap restarts the cache", func(t *testing.T) {
		var c Tail
		c.Add(up(1))
		c.Add(up(2))
		delta := c.Add(up(5))
		if want := updateCost(ptr(up(5))) - 2*updateCost(ptr(up(1))); delta != want {
			t.Fatalf("delta %d, want %d", delta, want)
		}
		if _, ok := c.Read(1, 2, 10); ok {
			t.Fatal("tokens before the gap still served")
		}
		if got, ok := c.Read(4, 5, 10); !ok || summary(got) != "5:[5]" {
			t.Fatalf("read after the gap: %q %v", summary(got), ok)
		}
	})
	t.Run("eviction compacts the slice", func(t *testing.T) {
		var c Tail
		for tok := int64(1); tok <= 3000; tok++ {
			c.Add(up(tok))
		}
		for i := 0; i < 2500; i++ {
			if c.EvictOldest() == 0 {
				t.Fatal("nothing evicted")
			}
		}
		// The front is reclaimed once more than half of it is dead.
		if len(c.ups) >= 3000 || len(c.ups)-c.head != 500 {
			t.Fatalf("head %d, len %d: want the dead front reclaimed and 500 live", c.head, len(c.ups))
		}
		if got, ok := c.Read(2500, 2502, 10); !ok || summary(got) != "2501:[2501] 2502:[2502]" {
			t.Fatalf("read after compaction: %q %v", summary(got), ok)
		}
		if tt, ok := c.TokenTime(2501); !ok || tt.Unix() != 2501 {
			t.Fatalf("tokenTime after compaction: %v %v", tt, ok)
		}
		if _, ok := c.TokenTime(2500); ok {
			t.Fatal("tokenTime of an evicted token")
		}
		var want int64
		for tok := int64(2501); tok <= 3000; tok++ {
			want += updateCost(ptr(up(tok)))
		}
		if c.bytes != want {
			t.Fatalf("bytes %d, want %d", c.bytes, want)
		}
	})
	t.Run("keeps the newest", func(t *testing.T) {
		var c Tail
		c.Add(up(1))
		if c.EvictOldest() != 0 {
			t.Fatal("evicted the only update")
		}
		if c.DropThrough(0) != 0 || c.DropThrough(1) == 0 || c.bytes != 0 {
			t.Fatal("dropThrough accounting")
		}
		if _, ok := c.Read(0, 1, 1); ok {
			t.Fatal("read from an empty cache")
		}
	})
}

func ptr(u replication.Update) *replication.Update { return &u }
