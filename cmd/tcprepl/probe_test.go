package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/probe"
)

func TestProbeFlagsConfig(t *testing.T) {
	env := map[string]string{envMasterAddress: "env-master:9092", envServerName: "env.example.org"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name     string
		args     []string
		getenv   func(string) string
		wantAddr string
		wantName string
		wantErr  string
	}{
		{"flags", []string{"--master", "m:1", "--server-name", "n"}, getenv, "m:1", "n", ""},
		{"environment", nil, getenv, "env-master:9092", "env.example.org", ""},
		{"no address", []string{"--server-name", "n"}, func(string) string { return "" }, "", "", "--master"},
		{"no name", []string{"--master", "m:1"}, func(string) string { return "" }, "", "", "--server-name"},
		{"bad output", []string{"--master", "m:1", "--server-name", "n", "-o", "yaml"}, getenv, "", "", "table or json"},
		{"bad interval", []string{"--master", "m:1", "--server-name", "n", "--interval", "0s"}, getenv, "", "", "positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f probeFlags
			cmd := &cobra.Command{}
			f.addFlags(cmd.Flags())
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := f.config(cmd, tt.getenv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Address != tt.wantAddr || cfg.ServerName != tt.wantName {
				t.Fatalf("config = %+v", cfg)
			}
		})
	}
}

// runCLI runs the built binary and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestProbeCLI runs `tcprepl probe` against `tcprepl master` processes.
func TestProbeCLI(t *testing.T) {
	bin := buildBinary(t)
	m := startMasterProc(t, bin, "--server-name", "cli.example.org", "--ephemeral")

	t.Run("table", func(t *testing.T) {
		out, errOut, code := runCLI(t, bin, "probe", "--master", m.replAddr, "--server-name", "cli.example.org", "--http", m.httpURL)
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, errOut, out)
		}
		for _, want := range []string{"Status:       reachable", "Server name:  cli.example.org", "p50 / p99 / max", "events", "Worker connections", "None."} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		out, errOut, code := runCLI(t, bin, "probe", "--master", m.replAddr, "--server-name", "cli.example.org", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var s probe.Snapshot
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if !s.Reachable || s.ConnectionsAvailable || s.Heartbeat.Samples == 0 || len(s.Streams) == 0 {
			t.Fatalf("snapshot = %+v", s)
		}
	})
	t.Run("wrong server name", func(t *testing.T) {
		out, errOut, code := runCLI(t, bin, "probe", "--master", m.replAddr, "--server-name", "other.example.org")
		if code == 0 || !strings.Contains(errOut, "wrong server name") || !strings.Contains(out, "UNREACHABLE") {
			t.Fatalf("exit %d, stderr %q, stdout:\n%s", code, errOut, out)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		_, errOut, code := runCLI(t, bin, "probe", "--master", addr, "--server-name", "cli.example.org")
		if code == 0 || !strings.Contains(errOut, "master unreachable") || !strings.Contains(errOut, "connection refused") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("HTTP API unreachable", func(t *testing.T) {
		_, errOut, code := runCLI(t, bin, "probe", "--master", m.replAddr, "--server-name", "cli.example.org", "--http", "http://"+m.replAddr)
		if code == 0 || !strings.Contains(errOut, "master HTTP API unreachable") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
}
