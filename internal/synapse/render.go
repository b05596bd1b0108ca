package synapse

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes s as one line of JSON: one object per stream with its
// writers, and the deployment's fields around them.
func WriteJSON(w io.Writer, s Snapshot) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write to stdout: %w", err)
	}
	return nil
}

// WriteTable writes s for a person: what is wrong first (error, missing and
// unexpected writers), then one line per stream and writer.
func WriteTable(w io.Writer, s Snapshot, now time.Time) error {
	var b strings.Builder
	state := "subscribed"
	if !s.Subscribed {
		state = "NOT SUBSCRIBED"
	}
	fmt.Fprintf(&b, "server %s: %s, last message %s, %s commands/s, %s USER_IP/s\n",
		s.ServerName, state, formatAgo(now, s.LastMessageAt), formatRate(s.CommandsPerSecond), formatRate(s.UserIPPerSecond))
	if s.ErrorMessage != "" {
		fmt.Fprintf(&b, "ERROR: %s\n", s.ErrorMessage)
	}
	for _, m := range s.MissingWriters {
		fmt.Fprintf(&b, "MISSING: %s is a configured writer of %s but did not announce it after REPLICATE\n", m.Instance, m.Stream)
	}
	for _, u := range s.UnexpectedWriters {
		fmt.Fprintf(&b, "UNEXPECTED: %s announces %s, which stream_writers does not give it\n", u.Instance, u.Stream)
	}
	fmt.Fprintf(&b, "REPLICATE (sent %s) answered by %d: %s\n", formatAgo(now, s.LastSolicitAt), len(s.Responders), orDash(strings.Join(s.Responders, " ")))
	if s.Overflow > 0 {
		fmt.Fprintf(&b, "OVERFLOW: %d commands named more streams or instances than tracked; the table is incomplete\n", s.Overflow)
	}
	b.WriteString("\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tWRITER\tPOSITION\tLAST ADVANCE\tROWS/S\tCMDS/S\tGAPS\tRESETS\tNOTE")
	flagged := make(map[WriterRef]string)
	for _, m := range s.MissingWriters {
		flagged[m] = "MISSING"
	}
	for _, u := range s.UnexpectedWriters {
		flagged[u] = "UNEXPECTED"
	}
	type row struct {
		stream string
		w      Writer
		note   string
		behind int64
	}
	var rows []row
	for _, st := range s.Streams {
		for _, wr := range st.Writers {
			r := row{stream: st.Name, w: wr, note: flagged[WriterRef{Stream: st.Name, Instance: wr.Instance}]}
			if wr.Announced && len(st.Writers) > 1 {
				r.behind = st.MaxPosition - wr.Position
			}
			rows = append(rows, r)
		}
	}
	// Flagged writers first, then by stream and instance (already sorted).
	slices.SortStableFunc(rows, func(a, b row) int {
		return boolRank(a.note == "") - boolRank(b.note == "")
	})
	for _, r := range rows {
		pos := "-"
		if r.w.Announced {
			pos = strconv.FormatInt(r.w.Position, 10)
		}
		note := r.note
		if r.behind > 0 && r.stream != CachesStream {
			note = strings.TrimSpace(note + fmt.Sprintf(" %d behind", r.behind))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", r.stream, r.w.Instance, pos,
			formatAgo(now, r.w.LastAdvanceAt), formatRate(r.w.RowsPerSecond), formatRate(r.w.CommandsPerSecond),
			r.w.Gaps, r.w.Resets, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	b.WriteString("\n")
	writeRedisStats(&b, s)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write to stdout: %w", err)
	}
	return nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatRate(r float64) string {
	return strconv.FormatFloat(r, 'f', 1, 64)
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	default:
		return strconv.FormatInt(n, 10) + " B"
	}
}

// formatAgo says how long ago t was, as "12s ago"; "never" for zero.
func formatAgo(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}

// writeRedisStats says what Redis reports about the pub/sub side.
func writeRedisStats(b *strings.Builder, s Snapshot) {
	r := s.Redis
	if r.Subscribers == 0 && r.Unavailable == "" {
		// Never read: the watcher itself would be one subscriber.
		b.WriteString("redis: statistics not read yet\n")
		return
	}
	fmt.Fprintf(b, "redis: %d subscribers on %s", r.Subscribers, s.ServerName)
	if len(r.Clients) > 0 {
		fmt.Fprintf(b, "; largest pub/sub output buffer %s (%s)", formatBytes(r.Clients[0].OutputBufferBytes), r.Clients[0].Addr)
	}
	if r.OutputBufferHardLimitBytes > 0 || r.OutputBufferSoftLimitBytes > 0 {
		fmt.Fprintf(b, "; limit %s hard, %s for %ds", formatBytes(r.OutputBufferHardLimitBytes), formatBytes(r.OutputBufferSoftLimitBytes), r.OutputBufferSoftSeconds)
	}
	b.WriteString("\n")
	if r.Unavailable != "" {
		fmt.Fprintf(b, "redis: not available: %s\n", r.Unavailable)
	}
}
