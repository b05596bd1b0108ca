package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the snapshot as one indented JSON document. Durations are
// in nanoseconds, as encoding/json writes time.Duration.
func WriteJSON(w io.Writer, s Snapshot) error {
	if s.Error != nil && s.ErrorMessage == "" {
		s.ErrorMessage = s.Error.Error()
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("write snapshot as JSON: %w", err)
	}
	return nil
}

// WriteTable writes the snapshot for a person, in sections like
// `kubectl cnpg status`: the master, the heartbeat, the streams, then one
// line per worker connection. now is used for relative times ("5m ago").
func WriteTable(w io.Writer, s Snapshot, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// tabwriter buffers until Flush, which reports any write error.
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(tw, format, args...) }

	p("Master\n")
	if s.Address != "" {
		p("  Address:\t%s\n", s.Address)
	}
	p("  Server name:\t%s\n", orDash(s.ServerName))
	if s.LogID != "" {
		p("  Log id:\t%s\n", s.LogID)
	}
	if s.LogChangedFrom != "" {
		p("  LOG CHANGED:\tfrom %s (the master's log was reset or replaced)\n", s.LogChangedFrom)
	}
	status := "reachable"
	if !s.Reachable {
		status = "UNREACHABLE"
	}
	p("  Status:\t%s\n", status)
	if msg := errorText(s); msg != "" {
		p("  Error:\t%s\n", msg)
	}
	for _, w := range s.Warnings {
		p("  WARNING:\t%s\n", w)
	}
	p("  Measured at:\t%s\n", s.MeasuredAt.UTC().Format(time.RFC3339))
	p("\n")

	hb := s.Heartbeat
	p("Heartbeat (INVALIDATE_CACHE relayed on caches)\n")
	if hb.Samples == 0 {
		p("  No heartbeat has come back yet.\n")
	} else {
		p("  Last:\t%s\n", formatLatency(hb.Last))
		p("  p50 / p99 / max:\t%s / %s / %s\t(%d samples)\n", formatLatency(hb.P50), formatLatency(hb.P99), formatLatency(hb.Max), hb.Samples)
		p("  Last seen:\t%s\n", formatAgo(now, hb.LastSeen))
	}
	if hb.Stale {
		p("  STALE:\ta heartbeat is overdue; the master may not be relaying INVALIDATE_CACHE\n")
	}
	p("\n")

	p("Streams\n")
	if len(s.Streams) == 0 {
		p("  No stream positions yet.\n")
	} else {
		p("  NAME\tTOKEN\tROWS/S\n")
		for _, st := range s.Streams {
			if st.WentBackFrom != 0 {
				p("  %s\t%d\t%.1f\tWENT BACK from %d\n", st.Name, st.Token, st.RowsPerSecond, st.WentBackFrom)
				continue
			}
			p("  %s\t%d\t%.1f\n", st.Name, st.Token, st.RowsPerSecond)
		}
	}
	p("\n")

	p("Worker connections\n")
	switch {
	case !s.ConnectionsAvailable:
		p("  Unavailable: the master's HTTP API was not given (--http) or could not be read.\n")
	case len(s.Connections) == 0:
		p("  None.\n")
	default:
		p("  ID\tNAME\tREMOTE\tSTATE\tCONNECTED\tMAX LAG\tBEHIND\n")
		for _, c := range s.Connections {
			p("  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, orDash(c.Name), orDash(c.RemoteAddr), orDash(c.State),
				formatAgo(now, c.Since), formatSeconds(c.MaxSecondsBehind), behindSummary(c.Streams))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write snapshot table: %w", err)
	}
	return nil
}

func errorText(s Snapshot) string {
	if s.Error != nil {
		return s.Error.Error()
	}
	return s.ErrorMessage
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatLatency(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

func formatSeconds(sec float64) string {
	return strconv.FormatFloat(sec, 'f', 1, 64) + "s"
}

func formatAgo(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
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

// behindSummary lists only the streams that are behind, in the master's
// order, so a line stays short when the worker is caught up.
func behindSummary(streams []ConnectionStream) string {
	var parts []string
	for _, st := range streams {
		if st.TokensBehind > 0 || st.SecondsBehind > 0 {
			parts = append(parts, fmt.Sprintf("%s:%d(%s)", st.Name, st.TokensBehind, formatSeconds(st.SecondsBehind)))
		}
	}
	if len(parts) == 0 {
		if len(streams) == 0 {
			return "-"
		}
		return "caught up"
	}
	return strings.Join(parts, " ")
}
