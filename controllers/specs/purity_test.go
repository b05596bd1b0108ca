package specs

import (
	"go/build"
	"strings"
	"testing"
)

// The builders are pure functions of a resource: they must not reach the
// API server, so this package imports no client.
func TestSpecsImportNoClient(t *testing.T) {
	t.Parallel()
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		for _, banned := range []string{"sigs.k8s.io/controller-runtime", "k8s.io/client-go"} {
			if strings.HasPrefix(imp, banned) {
				t.Errorf("package specs imports %s: builders must stay pure; move what needs a client to package controllers", imp)
			}
		}
	}
}
