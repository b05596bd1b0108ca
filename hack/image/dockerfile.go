package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Dockerfile is what the runtime (last) stage of a Dockerfile says about
// the image: the fields Spec also has.
type Dockerfile struct {
	From       string
	User       string
	Entrypoint []string
	// CopyDests are the destinations of the stage's COPY instructions.
	CopyDests []string
	// Ports are "port/proto" (EXPOSE defaults to tcp).
	Ports  []string
	Labels map[string]string
}

// ParseDockerfile reads the last stage of a Dockerfile. It understands the
// instructions this repository's Dockerfile uses (line continuations,
// comments, exec-form ENTRYPOINT, LABEL and EXPOSE lists) and fails on
// forms it cannot compare rather than guessing.
func ParseDockerfile(src string) (Dockerfile, error) {
	var df Dockerfile
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue // blank and comment lines inside a continued instruction
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\"))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(trimmed)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		return df, fmt.Errorf("the Dockerfile ends inside a continued line: %q", cur.String())
	}
	for _, l := range logical {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			df = Dockerfile{From: strings.Fields(rest)[0], Labels: map[string]string{}}
		case "USER":
			df.User = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &df.Entrypoint); err != nil {
				return df, fmt.Errorf("ENTRYPOINT %s: only the exec (JSON array) form is comparable: %w", rest, err)
			}
		case "COPY", "ADD":
			fields := strings.Fields(rest)
			df.CopyDests = append(df.CopyDests, fields[len(fields)-1])
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				df.Ports = append(df.Ports, p)
			}
		case "LABEL":
			kvs, err := splitLabels(rest)
			if err != nil {
				return df, fmt.Errorf("LABEL %s: %w", rest, err)
			}
			for k, v := range kvs {
				df.Labels[k] = v
			}
		}
	}
	if df.From == "" {
		return df, fmt.Errorf("the Dockerfile has no FROM")
	}
	return df, nil
}

// splitLabels parses key=value pairs separated by spaces, values optionally
// double-quoted.
func splitLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		key, rest, ok := strings.Cut(s, "=")
		if !ok || strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("want key=value at %q", s)
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && (rest[end] != '"' || rest[end-1] == '\\') {
				end++
			}
			if end >= len(rest) {
				return nil, fmt.Errorf("unterminated quote at %q", rest)
			}
			v, err := strconv.Unquote(rest[:end+1])
			if err != nil {
				return nil, fmt.Errorf("value %s: %w", rest[:end+1], err)
			}
			val, s = v, rest[end+1:]
		} else {
			val, s, _ = strings.Cut(rest, " ")
		}
		out[key] = val
	}
	return out, nil
}
