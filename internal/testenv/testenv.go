// Package testenv decides what a test does when something it needs from the
// machine (a tool, a binary, an interpreter) is missing: a developer's run
// skips it with the reason, a CI run (CI=true) fails it, so a CI that lost a
// tool cannot go green by skipping the tests that need it.
package testenv

import (
	"os"
	"strconv"
	"testing"
)

// CIEnv is the environment variable that marks a CI run; CI services set it
// to "true", and .ci/run does too.
const CIEnv = "CI"

// InCI reports whether CIEnv holds a true value (1, t, true, ...).
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv(CIEnv))
	return err == nil && ci
}

// SkipOrFail ends t because reason names something missing from the
// machine: it skips, except in a CI run, where it fails. Use it only for a
// missing tool, binary or file the build makes; -short and "not on this
// platform" stay ordinary skips.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s (%s=%s: a missing tool fails a CI run instead of skipping)", reason, CIEnv, os.Getenv(CIEnv))
	}
	t.Skip(reason)
}
