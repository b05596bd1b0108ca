package replication

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/tcprepl/tcprepl/internal/testenv"
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
// requires identical bytes. Skipped where python3 is not installed (a failure in CI).
func TestPythonCompatibility(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		testenv.SkipOrFail(t, "python3 not installed (the differential test needs only its standard library)")
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

// python2020Codec parses and re-formats lines the way Synapse's 2020
// commands.py does (from_line, then to_line), transcribed for the test.
const python2020Codec = `
import sys, json
enc = json.JSONEncoder()
def rt(line):
    name, rest = line.split(" ", 1)
    if name in ("SERVER", "ERROR", "PING", "SYNC", "NAME"):
        out = rest
    elif name == "RDATA":
        stream, token, row = rest.split(" ", 2)
        token = None if token == "batch" else int(token)
        out = " ".join((stream, str(token) if token is not None else "batch", enc.encode(json.loads(row))))
    elif name == "POSITION":
        stream, token = rest.split(" ", 1)
        out = " ".join((stream, str(int(token))))
    elif name == "REPLICATE":
        stream, token = rest.split(" ", 1)
        token = "NOW" if token in ("NOW", "now") else int(token)
        out = " ".join((stream, str(token)))
    elif name == "USER_SYNC":
        user_id, state, last = rest.split(" ", 2)
        assert state in ("start", "end")
        out = " ".join((user_id, state, str(int(last))))
    elif name == "FEDERATION_ACK":
        out = str(int(rest))
    elif name == "REMOVE_PUSHER":
        app_id, push_key, user_id = rest.split(" ", 2)
        out = " ".join((app_id, push_key, user_id))
    elif name == "INVALIDATE_CACHE":
        cache_func, keys = rest.split(" ", 1)
        out = " ".join((cache_func, enc.encode(json.loads(keys))))
    elif name == "USER_IP":
        user_id, jsn = rest.split(" ", 1)
        access_token, ip, user_agent, device_id, last_seen = json.loads(jsn)
        out = user_id + " " + enc.encode((access_token, ip, user_agent, device_id, last_seen))
    else:
        raise ValueError(name)
    return "%s %s" % (name, out)
for line in sys.stdin.buffer:
    sys.stdout.write(rt(line.decode("utf-8").rstrip("\n")) + "\n")
`

func randomWord(rng *rand.Rand) string {
	w := strings.ReplaceAll(randomString(rng), " ", "_")
	for _, bad := range []string{"\n", "\r", "\x00"} {
		w = strings.ReplaceAll(w, bad, "")
	}
	return "w" + w
}

func randomCommand(rng *rand.Rand) Command {
	row := func() json.RawMessage {
		b, _ := json.Marshal([]any{randomJSONValue(rng, 1), randomJSONValue(rng, 1)})
		return b
	}
	text := func() string { return strings.NewReplacer("\n", "", "\r", "", "\x00", "").Replace(randomString(rng)) }
	switch rng.IntN(13) {
	case 0:
		return ServerCommand{ServerName: text()}
	case 1:
		return RdataCommand{Stream: randomWord(rng), Token: rng.Int64N(1 << 40), Batch: rng.IntN(3) == 0, Row: row()}
	case 2:
		return PositionCommand{Stream: randomWord(rng), Token: rng.Int64() - rng.Int64()}
	case 3:
		return ErrorCommand{Message: text()}
	case 4:
		return PingCommand{Data: text()}
	case 5:
		return SyncCommand{Data: text()}
	case 6:
		return NameCommand{ClientName: text()}
	case 7:
		return ReplicateCommand{Stream: randomWord(rng), Token: rng.Int64N(1 << 40), Now: rng.IntN(2) == 0}
	case 8:
		return UserSyncCommand{UserID: randomWord(rng), Active: rng.IntN(2) == 0, LastSyncMS: rng.Int64N(1 << 42)}
	case 9:
		return FederationAckCommand{Token: rng.Int64N(1 << 40)}
	case 10:
		return RemovePusherCommand{AppID: randomWord(rng), PushKey: randomWord(rng), UserID: text()}
	case 11:
		return InvalidateCacheCommand{CacheFunc: randomWord(rng), Keys: row()}
	default:
		var dev *string
		if rng.IntN(2) == 0 {
			d := text()
			dev = &d
		}
		return UserIPCommand{UserID: randomWord(rng), AccessToken: text(), IP: text(), UserAgent: text(), DeviceID: dev, LastSeen: rng.Int64N(1 << 42)}
	}
}

// TestPython2020CodecAgrees: every line we format is a fixed point of the
// 2020 Synapse codec (parsed with from_line and written back with to_line,
// by Python itself), so a Synapse peer reads exactly what we meant and its
// traces match ours byte for byte. Skipped where python3 is not installed (a failure in CI).
func TestPython2020CodecAgrees(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		testenv.SkipOrFail(t, "python3 not installed (the differential test needs only its standard library)")
	}
	rng := rand.New(rand.NewPCG(3, 5))
	var lines []string
	var stdin bytes.Buffer
	for range 3000 {
		cmd := randomCommand(rng)
		line, err := FormatCommand(cmd)
		if err != nil {
			t.Fatalf("format %#v: %v", cmd, err)
		}
		lines = append(lines, string(line))
		stdin.Write(line)
		stdin.WriteByte('\n')
	}
	cmd := exec.Command(python, "-c", python2020Codec)
	cmd.Stdin = &stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, stderr.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	compared := 0
	for ; sc.Scan(); compared++ {
		if got := sc.Text(); got != lines[compared] {
			t.Fatalf("Synapse's codec rewrote\n ours   %q\n python %q", lines[compared], got)
		}
	}
	if compared != len(lines) {
		t.Fatalf("python printed %d lines for %d", compared, len(lines))
	}
}
