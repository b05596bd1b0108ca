package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tcprepl/tcprepl/internal/jsonscan"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// maxConnectionsBody bounds what the probe reads from /v1/connections, so a
// misbehaving endpoint cannot exhaust the operator's memory.
const maxConnectionsBody = 16 << 20

// connectionsPath is the master's connection table endpoint.
const connectionsPath = "/v1/connections"

// fetchConnections reads the master's connection table, page by page when
// the master pages it, and leaves out probe connections: those named
// ProbeName, and the one from ownAddr (this probe's local address, which
// matches even before the master has read our NAME). Probes observe, they
// do not replicate; counting them would make every master look like it has
// a worker. Every failure wraps ErrHTTPUnreachable.
func fetchConnections(ctx context.Context, client *http.Client, baseURL, ownAddr string) ([]Connection, error) {
	var all []Connection
	// maxPages bounds the loop should a master report a total it never
	// reaches (connections closing between pages).
	const maxPages = 64
	for page := 0; page < maxPages; page++ {
		conns, total, err := fetchConnectionsPage(ctx, client, baseURL, len(all))
		if err != nil {
			return nil, err
		}
		all = append(all, conns...)
		if len(conns) == 0 || len(all) >= total {
			break
		}
	}
	out := all[:0]
	for _, c := range all {
		if !isProbeConnection(c, ownAddr) {
			out = append(out, c)
		}
	}
	return out, nil
}

// isProbeConnection tells whether a connection of the table is a probe's:
// named ProbeName, or coming from ownAddr (this probe's local address, which
// matches even before the master has read our NAME).
func isProbeConnection(c Connection, ownAddr string) bool {
	return c.Name == ProbeName || (ownAddr != "" && c.RemoteAddr == ownAddr)
}

// fetchConnectionsPage reads one page from offset; total is how many
// connections the master has in all (the page's length when it says not).
func fetchConnectionsPage(ctx context.Context, client *http.Client, baseURL string, offset int) ([]Connection, int, error) {
	u := strings.TrimRight(baseURL, "/") + connectionsPath
	if offset > 0 {
		u += "?offset=" + strconv.Itoa(offset)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: bad HTTP URL %q (want e.g. http://master:8080): %w", ErrHTTPUnreachable, baseURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: GET %s: %w", ErrHTTPUnreachable, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxConnectionsBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: GET %s: reading body: %w", ErrHTTPUnreachable, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("%w: GET %s returned %s; check that the HTTP URL points at a tcprepl master's HTTP API", ErrHTTPUnreachable, u, resp.Status)
	}
	if len(body) > maxConnectionsBody {
		return nil, 0, fmt.Errorf("%w: GET %s: body larger than %d bytes", ErrHTTPUnreachable, u, maxConnectionsBody)
	}
	conns, total, err := decodeConnections(body)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: GET %s: %w; check that the HTTP URL points at a tcprepl master's HTTP API", ErrHTTPUnreachable, u, err)
	}
	return conns, total, nil
}

// decodeConnections accepts the table as tcprepl's master sends it
// (masterapi.ConnectionsResponse), or as a bare JSON array of entries.
func decodeConnections(body []byte) (conns []Connection, total int, err error) {
	// JSON's own whitespace only: bytes.TrimSpace would also strip \v, \f
	// and Unicode spaces, making a body encoding/json refuses look valid.
	trimmed := bytes.TrimLeftFunc(body, func(r rune) bool { return r < utf8.RuneSelf && jsonscan.IsSpace(byte(r)) })
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var entries []masterapi.Connection
		if err := json.Unmarshal(trimmed, &entries); err != nil {
			return nil, 0, fmt.Errorf("decode connection table: %w", err)
		}
		return connectionsOf(entries), len(entries), nil
	}
	var resp struct {
		masterapi.ConnectionsResponse
		// Total shadows the response's to tell "absent" (one page holds
		// the whole table) from 0.
		Total *int `json:"total"`
	}
	if err := json.Unmarshal(trimmed, &resp); err != nil {
		return nil, 0, fmt.Errorf("decode connection table: %w", err)
	}
	if resp.Connections == nil {
		return nil, 0, fmt.Errorf("decode connection table: no \"connections\" field")
	}
	total = len(resp.Connections)
	if resp.Total != nil {
		total = *resp.Total
	}
	return connectionsOf(resp.Connections), total, nil
}

// connectionsOf keeps what the probe reports of each entry of the master's
// table.
func connectionsOf(entries []masterapi.Connection) []Connection {
	out := make([]Connection, 0, len(entries))
	for _, e := range entries {
		c := Connection{ID: e.ID, Name: e.Name, RemoteAddr: e.RemoteAddr, State: e.State, Since: e.ConnectedSince, MaxSecondsBehind: e.MaxSecondsBehind}
		if e.Streams != nil {
			c.Streams = make([]ConnectionStream, 0, len(e.Streams))
		}
		for _, s := range e.Streams {
			c.Streams = append(c.Streams, ConnectionStream{Name: s.Name, Token: s.Token, TokensBehind: s.TokensBehind, SecondsBehind: s.SecondsBehind})
		}
		out = append(out, c)
	}
	return out
}
