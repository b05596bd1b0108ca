package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// streamsPath is the master's stream list, with each stream's oldest token.
const streamsPath = "/v1/streams"

// maxStreamsBody bounds what the probe reads from /v1/streams.
const maxStreamsBody = 1 << 20

// fetchOldestTokens reads the oldest token the master still holds per
// stream. Streams the master could not report (their entry has an error)
// are left out. Every failure wraps ErrHTTPUnreachable.
func fetchOldestTokens(ctx context.Context, client *http.Client, baseURL string) (map[string]int64, error) {
	u := strings.TrimRight(baseURL, "/") + streamsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: bad HTTP URL %q (want e.g. http://master:8080): %w", ErrHTTPUnreachable, baseURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %w", ErrHTTPUnreachable, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: GET %s returned %s; check that the HTTP URL points at a tcprepl master's HTTP API", ErrHTTPUnreachable, u, resp.Status)
	}
	var body struct {
		Streams []masterapi.StreamStatus `json:"streams"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStreamsBody)).Decode(&body); err != nil {
		return nil, fmt.Errorf("%w: GET %s: decode stream list: %w", ErrHTTPUnreachable, u, err)
	}
	if body.Streams == nil {
		return nil, fmt.Errorf("%w: GET %s: no \"streams\" field", ErrHTTPUnreachable, u)
	}
	out := make(map[string]int64, len(body.Streams))
	for _, s := range body.Streams {
		if s.Error == "" && s.OldestToken > 0 {
			out[s.Name] = s.OldestToken
		}
	}
	return out, nil
}
