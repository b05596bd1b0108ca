package main

import (
	"os"
	"strings"
	"testing"
)

// TestReferenceIsCurrent fails when docs/crd-reference.md no longer matches
// the API types; regenerate it with `go run ./hack/crd-ref > docs/crd-reference.md`.
func TestReferenceIsCurrent(t *testing.T) {
	want, err := Generate("../../api/v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../docs/crd-reference.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("docs/crd-reference.md is stale: run `go run ./hack/crd-ref > docs/crd-reference.md`")
	}
}

func TestReferenceCoversTheAPI(t *testing.T) {
	out, err := Generate("../../api/v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## ReplicationMaster\n", "## ReplicationWorker\n", "## ReplicationMasterStatus\n", "## WorkerStreamStatus\n",
		"Short name: `rmaster`", "Short name: `rworker`",
		"columns: Ready, Endpoint, Active, Standbys, Streams, Workers, Heartbeat, Age.",
		"columns: Master, Ready, Connected, Max Lag, Age.",
		"| `maxLagSeconds` | `int32` |", "Default: `30`",
		"a custom stream must not reuse the name of a standard stream",
		"storage.size is required unless storage.ephemeral is true",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	if _, err := Generate(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no *_types.go files") {
		t.Errorf("empty dir: %v", err)
	}
}
