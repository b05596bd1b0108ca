package replication_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/tcprepl/tcprepl/internal/replication"
)

// printingHandler prints what the client receives and signals when done.
type printingHandler struct {
	caughtUp     chan struct{}
	done         chan struct{}
	caughtUpOnce *sync.Once // a reconnect would report CaughtUp again
}

func (h printingHandler) HandleRows(_ context.Context, stream string, token int64, rows []json.RawMessage) error {
	for _, r := range rows {
		fmt.Printf("%s %d %s\n", stream, token, r)
	}
	if token == 2 {
		close(h.done)
	}
	return nil
}

func (h printingHandler) HandlePosition(stream string, token int64) {
	fmt.Printf("%s is at %d\n", stream, token)
}

func (h printingHandler) HandleConnectionState(state replication.ClientState, _ error) {
	if state == replication.ClientCaughtUp {
		h.caughtUpOnce.Do(func() { close(h.caughtUp) })
	}
}

// A master serving the caches stream from memory, and a worker that
// replicates it from token 0: the row already stored arrives in the
// catch-up, then POSITION, then a batch published live.
func Example() {
	src := replication.NewMemorySource("caches")
	src.Append("caches", json.RawMessage(`["get_user_by_id", ["@a:hs"], 1490197670513]`))

	srv, err := replication.NewServer(replication.ServerConfig{ServerName: "hs"}, src, nil)
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	h := printingHandler{caughtUp: make(chan struct{}), done: make(chan struct{}), caughtUpOnce: new(sync.Once)}
	client, err := replication.NewClient(replication.ClientConfig{
		Address: ln.Addr().String(), ServerName: "hs", Name: "worker-1", Handler: h,
		Streams: []replication.StreamRequest{{Stream: "caches", Token: 0}},
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- client.Run(ctx) }()

	<-h.caughtUp
	// Publish after the row is stored; a batch shares one token.
	srv.Publish(src.Append("caches",
		json.RawMessage(`["get_user_by_id", ["@b:hs"], 1490197670600]`),
		json.RawMessage(`["get_user_by_id", ["@c:hs"], 1490197670600]`)))
	<-h.done

	cancel()
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		fmt.Println("client:", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		fmt.Println("shutdown:", err)
	}
	if err := <-served; !errors.Is(err, replication.ErrServerClosed) {
		fmt.Println("serve:", err)
	}
	// Output:
	// caches 1 ["get_user_by_id", ["@a:hs"], 1490197670513]
	// caches is at 1
	// caches 2 ["get_user_by_id", ["@b:hs"], 1490197670600]
	// caches 2 ["get_user_by_id", ["@c:hs"], 1490197670600]
}
