package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/tcprepl/tcprepl/test/cluster"
)

// TestChartNotesNameExistingSamples checks that every sample file the
// chart's NOTES tell a user to apply exists in config/samples.
func TestChartNotesNameExistingSamples(t *testing.T) {
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(root, "charts", "tcprepl", "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	refs := regexp.MustCompile(`config/samples/[A-Za-z0-9_.-]+\.yaml`).FindAllString(string(notes), -1)
	if len(refs) == 0 {
		t.Fatal("the NOTES name no sample file")
	}
	for _, ref := range refs {
		if _, err := os.Stat(filepath.Join(root, ref)); err != nil {
			t.Errorf("the NOTES name %s, which does not exist: %v", ref, err)
		}
	}
}
