package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"

	"github.com/tcprepl/tcprepl/internal/synapse"
	"github.com/tcprepl/tcprepl/internal/synapse/redistest"
	"github.com/tcprepl/tcprepl/internal/synapse/synapsetest"
)

// emulateMain runs an emulated Synapse main process writing streams on
// channel: it answers every `REPLICATE ` with its positions.
func emulateMain(t *testing.T, addr, password, channel string, streams map[string]int64) {
	t.Helper()
	d := synapsetest.New(addr, password, channel)
	t.Cleanup(d.Close)
	if _, err := d.Start(context.Background(), synapsetest.MainInstance, streams); err != nil {
		t.Fatal(err)
	}
}

func TestProbeSynapseCLI(t *testing.T) {
	bin := buildBinary(t)
	addr, _ := redistest.StartRedis(t)
	locked := redistest.Start(t, "--requirepass", "s3cret")
	const name = "cli.example.org"
	// Main writes every stream stream_writers leaves to it; media-0 is
	// configured for quarantined_media and never says a word.
	mainStreams := map[string]int64{"events": 53, "caches": 900, "typing": 4}
	for _, s := range []string{"account_data", "backfill", "device_lists", "presence", "presence_federation", "push_rules", "receipts", "thread_subscriptions", "to_device"} {
		mainStreams[s] = 1
	}
	emulateMain(t, addr, "", name, mainStreams)
	emulateMain(t, locked.Addr, "s3cret", name, map[string]int64{"events": 7})

	dir := t.TempDir()
	hsConfig := filepath.Join(dir, "homeserver.yaml")
	writeFile(t, hsConfig, "server_name: cli.example.org\ninstance_map:\n  main: {host: main, port: 9093}\n  media-0: {host: media, port: 9093}\nstream_writers:\n  quarantined_media_changes: media-0\n")
	pwFile := filepath.Join(dir, "redis-password")
	writeFile(t, pwFile, "s3cret\n")

	t.Run("table", func(t *testing.T) {
		out, errOut, code := runCLI(t, bin, "probe", "--redis", addr, "--server-name", name, "--wait", "1s", "--stream-writers", hsConfig)
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, errOut, out)
		}
		lines := strings.Split(out, "\n")
		missing := strings.Index(out, "MISSING: media-0 is a configured writer of quarantined_media")
		table := strings.Index(out, "STREAM ")
		if missing < 0 || table < 0 || missing > table {
			t.Errorf("the missing writer must come first, before the table:\n%s", out)
		}
		for _, want := range []string{"server cli.example.org: subscribed", "answered by 1: master", "redis: 2 subscribers", "limit 32.0 MiB hard"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		var eventsLine, quarantinedLine string
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "events" {
				eventsLine = l
			}
			if len(f) >= 3 && f[0] == "quarantined_media" {
				quarantinedLine = l
			}
		}
		if f := strings.Fields(eventsLine); len(f) < 8 || f[1] != "master" || f[2] != "53" || !strings.Contains(eventsLine, "ago") && !strings.Contains(eventsLine, "just now") {
			t.Errorf("events line = %q; want writer master, position 53, last advance", eventsLine)
		}
		if f := strings.Fields(quarantinedLine); len(f) < 3 || f[1] != "media-0" || f[2] != "-" || !strings.HasSuffix(quarantinedLine, "MISSING") {
			t.Errorf("quarantined_media line = %q; want media-0 without a position, MISSING", quarantinedLine)
		}
	})
	t.Run("json", func(t *testing.T) {
		out, errOut, code := runCLI(t, bin, "probe", "--redis", addr, "--server-name", name, "--wait", "1s", "-o", "json", "--stream-writers", hsConfig)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var s synapse.Snapshot
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("not one JSON document: %v\n%s", err, out)
		}
		if !s.Subscribed || len(s.MissingWriters) != 1 || s.MissingWriters[0].Instance != "media-0" || s.Commands["POSITION"] != uint64(len(mainStreams)) {
			t.Fatalf("snapshot = %+v", s)
		}
		for _, st := range s.Streams {
			if st.Name == "events" && (len(st.Writers) != 1 || st.Writers[0].Position != 53 || st.Writers[0].LastAdvanceAt.IsZero()) {
				t.Errorf("events = %+v", st)
			}
		}
	})
	t.Run("watch prints one JSON document per line", func(t *testing.T) {
		cmd := exec.Command(bin, "probe", "--redis", addr, "--server-name", name, "-o", "json", "--watch", "--interval", "200ms")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for i := 0; i < 3; i++ {
			if !sc.Scan() {
				t.Fatalf("line %d: %v", i, sc.Err())
			}
			var s synapse.Snapshot
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				t.Fatalf("line %d is not a JSON document: %v: %s", i, err, sc.Text())
			}
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("after SIGINT: %v", err)
		}
	})
	t.Run("password from a file", func(t *testing.T) {
		out, errOut, code := runCLI(t, bin, "probe", "--redis", locked.Addr, "--server-name", name, "--wait", "1s", "--redis-password-file", pwFile)
		if code != 0 || !strings.Contains(out, "answered by 1: master") {
			t.Fatalf("exit %d: %s\n%s", code, errOut, out)
		}
	})
	t.Run("password from the environment", func(t *testing.T) {
		cmd := exec.Command(bin, "probe", "--redis", locked.Addr, "--server-name", name, "--wait", "1s", "-o", "json")
		cmd.Env = append(os.Environ(), envRedisPassword+"=s3cret")
		if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), `"subscribed":true`) {
			t.Fatalf("%v: %s", err, out)
		}
	})

	failures := map[string]struct {
		args    []string
		env     string
		mention []string
	}{
		"wrong password": {args: []string{"--redis", locked.Addr}, env: envRedisPassword + "=wrong", mention: []string{"redis authentication failed", "WRONGPASS"}},
		"no password":    {args: []string{"--redis", locked.Addr}, mention: []string{"redis authentication failed", "NOAUTH"}},
		"unreachable":    {args: []string{"--redis", closedAddr(t)}, mention: []string{"redis unreachable", "connection refused"}},
		"nothing heard":  {args: []string{"--redis", addr, "--server-name", "nobody.example.org"}, mention: []string{"nothing heard on the replication channel", `"nobody.example.org"`}},
	}
	tlsSrv := redistest.StartTLS(t)
	// Over TLS with the CA the probe subscribes: nobody speaks on the
	// channel, so it says so, not that Redis is unreachable.
	failures["TLS with the CA"] = struct {
		args    []string
		env     string
		mention []string
	}{args: []string{"--redis", tlsSrv.Addr, "--redis-tls", "--redis-ca", tlsSrv.CAFile}, mention: []string{"nothing heard"}}
	failures["TLS without the CA"] = struct {
		args    []string
		env     string
		mention []string
	}{args: []string{"--redis", tlsSrv.Addr, "--redis-tls"}, mention: []string{"redis unreachable", "certificate"}}
	for tname, tc := range failures {
		t.Run(tname, func(t *testing.T) {
			args := append([]string{"probe", "--server-name", name, "--wait", "1s"}, tc.args...)
			cmd := exec.Command(bin, args...)
			cmd.Env = os.Environ()
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err == nil {
				t.Fatalf("exit 0; want a failure\n%s", out)
			}
			for _, m := range tc.mention {
				if !strings.Contains(stderr.String(), m) {
					t.Errorf("stderr %q lacks %q", stderr.String(), m)
				}
			}
		})
	}
}

func TestProbeSynapseFlags(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeFile(t, ca, "not a certificate")
	tests := map[string]struct {
		args    []string
		mention string
	}{
		"with --master":         {[]string{"--master", "m:1"}, "exclude each other"},
		"no server name":        {[]string{"--server-name", ""}, "--server-name"},
		"missing password file": {[]string{"--redis-password-file", filepath.Join(dir, "nope")}, "--redis-password-file"},
		"ca without tls":        {[]string{"--redis-ca", ca}, "--redis-tls"},
		"ca not pem":            {[]string{"--redis-tls", "--redis-ca", ca}, "no PEM certificate"},
		"bad stream writers":    {[]string{"--stream-writers", ca}, "--stream-writers"},
		"negative solicit":      {[]string{"--solicit-interval", "-1s"}, "--solicit-interval"},
		"bad output":            {[]string{"-o", "yaml"}, "table or json"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var f probeFlags
			cmd := &cobra.Command{}
			f.addFlags(cmd.Flags())
			args := append([]string{"--redis", "r:6379", "--server-name", "x"}, tc.args...)
			if err := cmd.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			_, err := f.synapseConfig(cmd, func(string) string { return "" })
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("err = %v; want one mentioning %q", err, tc.mention)
			}
		})
	}
	t.Run("password file wins over the environment", func(t *testing.T) {
		pw := filepath.Join(dir, "pw")
		writeFile(t, pw, "from-file\n")
		var f probeFlags
		cmd := &cobra.Command{}
		f.addFlags(cmd.Flags())
		if err := cmd.ParseFlags([]string{"--redis", "r:6379", "--server-name", "x", "--redis-password-file", pw}); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.synapseConfig(cmd, func(k string) string { return map[string]string{envRedisPassword: "from-env"}[k] })
		if err != nil || cfg.Password != "from-file" || cfg.SolicitInterval != 0 {
			t.Fatalf("cfg = %+v, %v", cfg, err)
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	_ = l.Close()
	return a
}
