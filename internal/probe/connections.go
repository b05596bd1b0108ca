package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxConnectionsBody bounds what the probe reads from /v1/connections, so a
// misbehaving endpoint cannot exhaust the operator's memory.
const maxConnectionsBody = 16 << 20

// connectionsPath is the master's connection table endpoint.
const connectionsPath = "/v1/connections"

// fetchConnections reads the master's connection table and leaves out probe
// connections (named ProbeName): they observe, they do not replicate, and
// counting them would make every master look like it has a worker.
// Every failure wraps ErrHTTPUnreachable.
func fetchConnections(ctx context.Context, client *http.Client, baseURL string) ([]Connection, error) {
	url := strings.TrimRight(baseURL, "/") + connectionsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: bad HTTP URL %q (want e.g. http://master:8080): %w", ErrHTTPUnreachable, baseURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %w", ErrHTTPUnreachable, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxConnectionsBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: reading body: %w", ErrHTTPUnreachable, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: GET %s returned %s; check that --http points at a tcprepl master's HTTP API", ErrHTTPUnreachable, url, resp.Status)
	}
	if len(body) > maxConnectionsBody {
		return nil, fmt.Errorf("%w: GET %s: body larger than %d bytes", ErrHTTPUnreachable, url, maxConnectionsBody)
	}
	conns, err := decodeConnections(body)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %w; check that --http points at a tcprepl master's HTTP API", ErrHTTPUnreachable, url, err)
	}
	out := conns[:0]
	for _, c := range conns {
		if c.Name == ProbeName {
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

// decodeConnections accepts the table either as a bare JSON array or wrapped
// as {"connections": [...]}, so the probe does not break if the master adds
// envelope fields (totals, paging) later.
func decodeConnections(body []byte) ([]Connection, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var conns []Connection
		if err := json.Unmarshal(trimmed, &conns); err != nil {
			return nil, fmt.Errorf("decode connection table: %w", err)
		}
		return conns, nil
	}
	var env struct {
		Connections *[]Connection `json:"connections"`
	}
	if err := json.Unmarshal(trimmed, &env); err != nil {
		return nil, fmt.Errorf("decode connection table: %w", err)
	}
	if env.Connections == nil {
		return nil, fmt.Errorf("decode connection table: no \"connections\" field")
	}
	return *env.Connections, nil
}
