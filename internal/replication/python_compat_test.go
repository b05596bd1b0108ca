package replication

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
)

// randomJSONValue builds a random value for the Python differential test:
// nested lists and objects, strings mixing ASCII, controls, quotes,
// backslashes, DEL, Latin-1, BMP and astral characters, and the numbers
// Python prints back unchanged (integers of any size, short decimals).
func randomJSONValue(rng *rand.Rand, depth int) any {
	switch k := rng.IntN(9); {
	case k == 0 && depth < 4:
		n := rng.IntN(4)
		l := make([]any, n)
		for i := range l {
			l[i] = randomJSONValue(rng, depth+1)
		}
		return l
	case k == 1 && depth < 4:
		// encoding/json sorts map keys, so the order is known; Python keeps it.
		m := map[string]any{}
		for range rng.IntN(4) {
			m[randomString(rng)] = randomJSONValue(rng, depth+1)
		}
		return m
	case k == 2:
		return rng.Int64() - rng.Int64()
	case k == 3:
		return json.Number([]string{"1.5", "-0.25", "0", "-7", "123456789012345678901234567890", "2.5e-07"}[rng.IntN(6)])
	case k == 4:
		return []any{true, false, nil}[rng.IntN(3)]
	default:
		return randomString(rng)
	}
}

func randomString(rng *rand.Rand) string {
	pool := []rune{'a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\r', '\t', '\b', '\f', 0x01, 0x1f, 0x7f, '<', '>', '&',
		'é', 'ÿ', 'ā', '€', '\u2028', '\u2029', '中', '\ufeff', '\uffff', '😀', '\U0001F9E0', '\U0010FFFF'}
	var b strings.Builder
	for range rng.IntN(12) {
		b.WriteRune(pool[rng.IntN(len(pool))])
	}
	return b.String()
}

// TestPythonCompatibility re-encodes random JSON with AppendPythonJSON and
// with the real Python json module (json.dumps(json.loads(line))), and
// requires identical bytes. Skipped where python3 is not installed.
func TestPythonCompatibility(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	rng := rand.New(rand.NewPCG(7, 11))
	var inputs [][]byte
	var stdin bytes.Buffer
	for range 2000 {
		v := randomJSONValue(rng, 0)
		// encoding/json's output: compact, HTML-escaped, \u2028 escaped,
		// non-ASCII raw: as far from Python's form as valid JSON gets.
		in, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, in)
		stdin.Write(in)
		stdin.WriteByte('\n')
	}
	cmd := exec.Command(python, "-c", `
import sys, json
for line in sys.stdin.buffer:
    sys.stdout.write(json.dumps(json.loads(line)) + "\n")
`)
	cmd.Stdin = &stdin
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	compared := 0
	for ; sc.Scan(); compared++ {
		got, err := AppendPythonJSON(nil, inputs[compared])
		if err != nil {
			t.Fatalf("AppendPythonJSON(%s): %v", inputs[compared], err)
		}
		if want := sc.Text(); string(got) != want {
			t.Fatalf("input %s\n ours   %s\n python %s", inputs[compared], got, want)
		}
	}
	if compared != len(inputs) {
		t.Fatalf("python printed %d lines for %d inputs", compared, len(inputs))
	}
}
