package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSkipOrFail runs a test calling SkipOrFail in a child process, once
// per CI value, and reads go test's verdict: a skip outside CI, a failure
// naming the reason in it.
func TestSkipOrFail(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		SkipOrFail(t, "no frobnicator on this machine")
		t.Fatal("SkipOrFail returned")
	}
	tests := map[string]struct {
		ci       string
		wantFail bool
	}{
		"unset":      {ci: "", wantFail: false},
		"false":      {ci: "false", wantFail: false},
		"garbage":    {ci: "maybe", wantFail: false},
		"true":       {ci: "true", wantFail: true},
		"one":        {ci: "1", wantFail: true},
		"upper TRUE": {ci: "TRUE", wantFail: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSkipOrFail$", "-test.v")
			cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", CIEnv+"="+tc.ci)
			out, err := cmd.CombinedOutput()
			text := string(out)
			if !strings.Contains(text, "no frobnicator on this machine") {
				t.Fatalf("the child's output lacks the reason:\n%s", text)
			}
			if tc.wantFail {
				if err == nil || !strings.Contains(text, "--- FAIL: TestSkipOrFail") {
					t.Fatalf("CI=%q: want a failure, got err %v:\n%s", tc.ci, err, text)
				}
				return
			}
			if err != nil || !strings.Contains(text, "--- SKIP: TestSkipOrFail") {
				t.Fatalf("CI=%q: want a skip, got err %v:\n%s", tc.ci, err, text)
			}
		})
	}
}

func TestInCI(t *testing.T) {
	tests := map[string]struct {
		ci   string
		want bool
	}{
		"unset": {"", false}, "false": {"false", false}, "zero": {"0", false}, "garbage": {"yes please", false},
		"true": {"true", true}, "one": {"1", true}, "T": {"T", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv(CIEnv, tc.ci)
			if got := InCI(); got != tc.want {
				t.Fatalf("InCI() with %s=%q = %v, want %v", CIEnv, tc.ci, got, tc.want)
			}
		})
	}
}

// TestSkipOrFailSkipsOutsideCI calls SkipOrFail in this process (the
// child-process test above sees only go test's verdict).
func TestSkipOrFailSkipsOutsideCI(t *testing.T) {
	t.Setenv(CIEnv, "")
	var sub *testing.T
	t.Run("missing tool", func(t *testing.T) {
		sub = t
		SkipOrFail(t, "no frobnicator")
		t.Fatal("SkipOrFail returned")
	})
	if !sub.Skipped() || sub.Failed() {
		t.Fatalf("skipped %v, failed %v: want a skip", sub.Skipped(), sub.Failed())
	}
}
