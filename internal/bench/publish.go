package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// rowPad makes rows about RowBytes long.
func (t *target) rowPad() string {
	// ["bench_xxx", [SEQ], TS]: about 35 bytes besides the padding.
	return "bench_" + strings.Repeat("x", max(0, t.cfg.RowBytes-35))
}

// batch builds n rows whose last field is ts (ns), keys [seq...].
func appendBatch(rows []json.RawMessage, buf []byte, pad string, seq int64, n int, ts int64) ([]json.RawMessage, []byte) {
	rows = rows[:0]
	buf = buf[:0]
	starts := make([]int, 0, n+1)
	for i := range n {
		starts = append(starts, len(buf))
		buf = append(buf, `["`...)
		buf = append(buf, pad...)
		buf = append(buf, `", [`...)
		buf = strconv.AppendInt(buf, seq+int64(i), 10)
		buf = append(buf, `], `...)
		buf = strconv.AppendInt(buf, ts, 10)
		buf = append(buf, ']')
	}
	starts = append(starts, len(buf))
	for i := range n {
		rows = append(rows, json.RawMessage(buf[starts[i]:starts[i+1]]))
	}
	return rows, buf
}

// publisher publishes one batch and returns its token.
type publisher func(ctx context.Context, rows []json.RawMessage) (int64, error)

func (t *target) publisher(kind string) (publisher, error) {
	switch kind {
	case "in-process":
		if t.m == nil {
			return nil, errors.New("in-process publishing needs an in-process master")
		}
		return func(ctx context.Context, rows []json.RawMessage) (int64, error) {
			return t.m.Publish(ctx, Stream, rows)
		}, nil
	case "http":
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
		url := t.httpURL + "/v1/streams/" + Stream + "/rows"
		return func(ctx context.Context, rows []json.RawMessage) (int64, error) {
			var body bytes.Buffer
			body.WriteString(`{"rows": [`)
			for i, r := range rows {
				if i > 0 {
					body.WriteByte(',')
				}
				body.Write(r)
			}
			body.WriteString("]}")
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &body)
			if err != nil {
				return 0, err
			}
			req.Header.Set("Content-Type", "application/json")
			if t.cfg.PublishToken != "" {
				req.Header.Set("Authorization", "Bearer "+t.cfg.PublishToken)
			}
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
			}
			var out masterapi.PublishResponse
			if err := json.Unmarshal(b, &out); err != nil {
				return 0, fmt.Errorf("POST %s: %w", url, err)
			}
			return out.Token, nil
		}, nil
	}
	return nil, fmt.Errorf("unknown publisher %q", kind)
}
