package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/tcprepl/tcprepl/internal/masterapi"
)

// TestProbeHelpUsesTheMasterHTTPPort checks that `tcprepl probe --help`
// shows the master's own default HTTP port, so its examples work as
// written.
func TestProbeHelpUsesTheMasterHTTPPort(t *testing.T) {
	_, port, err := net.SplitHostPort(masterapi.DefaultHTTPListen)
	if err != nil {
		t.Fatal(err)
	}
	cmd := newProbeCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, line := range strings.Split(help, "\n") {
		if !strings.Contains(line, "http://") {
			continue
		}
		if !strings.Contains(line, "http://master:"+port) {
			t.Errorf("help line names an HTTP URL that is not the master's default port %s: %q", port, line)
		}
	}
	if !strings.Contains(help, "http://master:"+port) {
		t.Errorf("help shows no example of the master's HTTP API on port %s:\n%s", port, help)
	}
}
