package streams

import "testing"

func TestStandard(t *testing.T) {
	got := Standard()
	if len(got) != 16 || got[0] != Events || got[15] != UserSignature {
		t.Fatalf("Standard() = %v", got)
	}
	seen := map[string]bool{}
	for _, name := range got {
		if seen[name] || !IsStandard(name) {
			t.Fatalf("%q repeated or not recognised", name)
		}
		seen[name] = true
	}
	got[0] = "changed"
	if Standard()[0] != Events {
		t.Fatal("Standard returned the package's own array")
	}
	if IsStandard("nosuch_stream") {
		t.Fatal("an unknown stream is standard")
	}
}
