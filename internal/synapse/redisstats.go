package synapse

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// maxListedClients bounds RedisStats.Clients: a deployment has a few dozen
// processes; the largest buffers are the ones worth showing.
const maxListedClients = 64

// readStats asks Redis about the pub/sub side: subscribers of the channel,
// each pub/sub client's output buffer and the pubsub output buffer limit.
// What an ACL forbids is said in Unavailable; the rest is kept.
func (w *Watcher) readStats(ctx context.Context, client *redis.Client) {
	var stats RedisStats
	var unavailable []string
	note := func(what string, err error) {
		unavailable = append(unavailable, fmt.Sprintf("%s: %v", what, err))
	}

	if n, err := client.PubSubNumSub(ctx, w.cfg.ServerName).Result(); err != nil {
		note("PUBSUB NUMSUB", err)
	} else {
		stats.Subscribers = n[w.cfg.ServerName]
	}

	if text, err := client.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text(); err != nil {
		note("CLIENT LIST TYPE pubsub", err)
	} else {
		stats.Clients = parseClientList(text)
	}

	if cfg, err := client.ConfigGet(ctx, "client-output-buffer-limit").Result(); err != nil {
		note("CONFIG GET client-output-buffer-limit", err)
	} else if hard, soft, secs, err := parsePubSubLimit(cfg["client-output-buffer-limit"]); err != nil {
		note("CONFIG GET client-output-buffer-limit", err)
	} else {
		stats.OutputBufferHardLimitBytes, stats.OutputBufferSoftLimitBytes, stats.OutputBufferSoftSeconds = hard, soft, secs
	}
	if ctx.Err() != nil {
		return // stopping: keep the last good statistics
	}
	stats.Unavailable = strings.Join(unavailable, "; ")

	w.mu.Lock()
	w.redisStats = stats
	w.mu.Unlock()
}

// parseClientList reads the lines of CLIENT LIST (`id=5 addr=... name=...
// sub=2 ... omem=0 ...`), largest output buffer first.
func parseClientList(text string) []PubSubClient {
	var clients []PubSubClient
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var c PubSubClient
		for field := range strings.FieldsSeq(line) {
			key, value, ok := strings.Cut(field, "=")
			if !ok {
				continue
			}
			switch key {
			case "id":
				c.ID, _ = strconv.ParseInt(value, 10, 64)
			case "addr":
				c.Addr = value
			case "name":
				c.Name = value
			case "sub":
				c.Subscriptions, _ = strconv.ParseInt(value, 10, 64)
			case "omem":
				c.OutputBufferBytes, _ = strconv.ParseInt(value, 10, 64)
			}
		}
		clients = append(clients, c)
	}
	slices.SortFunc(clients, func(a, b PubSubClient) int {
		if a.OutputBufferBytes != b.OutputBufferBytes {
			return cmp.Compare(b.OutputBufferBytes, a.OutputBufferBytes)
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if len(clients) > maxListedClients {
		clients = clients[:maxListedClients]
	}
	return clients
}

// parsePubSubLimit reads the pubsub class of client-output-buffer-limit
// ("normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60").
func parsePubSubLimit(value string) (hard, soft, seconds int64, err error) {
	f := strings.Fields(value)
	for i := 0; i+3 < len(f); i += 4 {
		if f[i] != "pubsub" {
			continue
		}
		var nums [3]int64
		for j := range nums {
			if nums[j], err = strconv.ParseInt(f[i+1+j], 10, 64); err != nil {
				return 0, 0, 0, fmt.Errorf("pubsub limit %q: %w", strings.Join(f[i:i+4], " "), err)
			}
		}
		return nums[0], nums[1], nums[2], nil
	}
	return 0, 0, 0, fmt.Errorf("no pubsub class in %q", value)
}
