package replication

import (
	"fmt"
	"strings"
	"testing"
)

func TestSessionExample(t *testing.T) {
	src := NewMemorySource("events", "caches")
	src.Append("events", row(`["ev", []]`))
	src.Append("caches", cacheRow(1))
	srv, addr := startServer(t, ServerConfig{ServerName: "localhost:8823"}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("localhost:8823")
	r.send("NAME synapse.app.appservice", "PING 1490197665618", "REPLICATE events 1", "REPLICATE caches 1")
	got := r.readUntil("POSITION caches")
	want := []string{"POSITION events 1", "POSITION caches 1"}
	if strings.Join(got, "|") != strings.Join(want, "|") && strings.Join(got, "|") != "POSITION caches 1|POSITION events 1" {
		t.Fatalf("got %q, want %q", got, want)
	}
	if len(got) == 1 {
		r.expectLine("POSITION events 1")
	}
	waitFor(t, "both subscriptions live", func() bool {
		c := srv.Connections()
		return len(c) == 1 && len(c[0].Subscriptions) == 2 && c[0].Subscriptions[0].State == "subscribed" && c[0].Subscriptions[1].State == "subscribed"
	})
	srv.Publish(src.Append("caches", row(`["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`)))
	r.expectLine(`RDATA caches 2 ["get_user_by_id", ["@01register-user:localhost:8823"], 1490197670513]`)
	if n := srv.Connections()[0].Name; n != "synapse.app.appservice" {
		t.Errorf("connection name %q", n)
	}
}

func TestCatchUpFromToken(t *testing.T) {
	src := NewMemorySource("caches")
	for i := 1; i <= 5; i++ {
		src.Append("caches", cacheRow(i))
	}
	_, addr := startServer(t, ServerConfig{}, src, &recordingHandler{})
	r := dialRaw(t, addr)
	r.handshake("test.server")
	r.send("REPLICATE caches 2")
	got := r.readUntil("POSITION")
	var want []string
	for i := 3; i <= 5; i++ {
		want = append(want, fmt.Sprintf("RDATA caches %d %s", i, cacheRow(i)))
	}
	want = append(want, "POSITION caches 5")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
