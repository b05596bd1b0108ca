package streamlog

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashDirEnv, when set, turns the test binary into the crash child: it
// appends to the log in that directory until it is killed.
const crashDirEnv = "STREAMLOG_CRASH_CHILD_DIR"

// crashRoundEnv tells the child which round it is, so rows of different
// children on the same directory stay distinguishable.
const crashRoundEnv = "STREAMLOG_CRASH_CHILD_ROUND"

const (
	crashAppenders = 8
	crashRows      = 3 // rows per append
)

var crashStreams = []string{"events", "caches"}

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
		os.Exit(crashChild(dir, round))
	}
	os.Exit(m.Run())
}

// crashChild appends forever from several goroutines and prints one line
// per acknowledged append: "ack <stream> <token> <appender> <seq>". Printing
// happens only after Append returned, so every printed line is a promise the
// parent checks after kill -9.
func crashChild(dir string, round int) int {
	l, err := Open(Options{Dir: dir, Streams: crashStreams, TrimInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child: open:", err)
		return 2
	}
	// Stdout is unbuffered in Go; one Write per line keeps lines whole.
	var outMu sync.Mutex
	var wg sync.WaitGroup
	for a := range crashAppenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := crashStreams[a%len(crashStreams)]
			for seq := 0; ; seq++ {
				rows := make([]json.RawMessage, crashRows)
				for i := range rows {
					rows[i] = json.RawMessage(crashRow(round, a, seq, i))
				}
				u, err := l.Append(context.Background(), stream, rows)
				if err != nil {
					fmt.Fprintln(os.Stderr, "crash child: append:", err)
					os.Exit(3)
				}
				outMu.Lock()
				fmt.Fprintf(os.Stdout, "ack %s %d %d %d\n", stream, u.Token, a, seq)
				outMu.Unlock()
			}
		}()
	}
	wg.Wait()
	return 0
}

func crashRow(round, appender, seq, i int) string {
	return fmt.Sprintf(`[%d, %d, %d, %d, "%s"]`, round, appender, seq, i, strings.Repeat("x", 40))
}

// crashKey identifies one append: round, appender, seq.
type crashKey [3]int

type ack struct {
	stream   string
	token    int64
	appender int
	seq      int
}

// runCrashChild starts a child on dir, kills it with SIGKILL after it has
// acknowledged at least acks appends, and returns what it acknowledged.
func runCrashChild(t *testing.T, dir string, round, acks int) []ack {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var got []ack
	sc := bufio.NewScanner(out)
	killed := false
	timer := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 5 || f[0] != "ack" {
			// A line cut by the kill; the append behind it counts as
			// unacknowledged.
			continue
		}
		tok, _ := strconv.ParseInt(f[2], 10, 64)
		a, _ := strconv.Atoi(f[3])
		seq, _ := strconv.Atoi(f[4])
		got = append(got, ack{f[1], tok, a, seq})
		if len(got) == acks && !killed {
			// Mid-flight: the other appenders are inside Append right now.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited before %d acks (got %d): %v\n%s", acks, len(got), err, stderr.String())
	}
	return got
}

// TestKill9MidAppend kills a child process with SIGKILL while it appends
// from several goroutines, twice in a row on the same directory, and checks
// after each: every acknowledged row is present exactly once, at the token
// acknowledged; nothing is duplicated; tokens are dense; appends continue
// from the recovered token.
func TestKill9MidAppend(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := t.TempDir()
	for round := 1; round <= 2; round++ {
		acks := runCrashChild(t, dir, round, 1500*round)
		l := openTest(t, Options{Dir: dir, Streams: crashStreams})
		ackedAt := map[crashKey]ack{}
		for _, a := range acks {
			ackedAt[crashKey{round, a.appender, a.seq}] = a
		}
		seen := map[crashKey]int64{}
		for _, stream := range crashStreams {
			cur, _ := l.CurrentToken(stream)
			us := mustRead(t, l, stream, 0, cur, 1<<30)
			if int64(len(us)) != cur {
				t.Fatalf("round %d: %s has %d tokens, current %d", round, stream, len(us), cur)
			}
			for i, u := range us {
				if u.Token != int64(i+1) {
					t.Fatalf("round %d: %s update %d has token %d", round, stream, i, u.Token)
				}
				if len(u.Rows) == 1 && string(u.Rows[0]) == `["after"]` {
					continue // written by the previous round's check
				}
				if len(u.Rows) != crashRows {
					t.Fatalf("round %d: %s token %d has %d rows, want %d", round, stream, u.Token, len(u.Rows), crashRows)
				}
				var first []any
				if err := json.Unmarshal(u.Rows[0], &first); err != nil || len(first) != 5 {
					t.Fatalf("round %d: %s token %d: unexpected row %s (%v)", round, stream, u.Token, u.Rows[0], err)
				}
				key := crashKey{int(first[0].(float64)), int(first[1].(float64)), int(first[2].(float64))}
				for j, r := range u.Rows {
					want := crashRow(key[0], key[1], key[2], j)
					if string(r) != want {
						t.Fatalf("round %d: %s token %d row %d = %s, want %s", round, stream, u.Token, j, r, want)
					}
				}
				if prev, dup := seen[key]; dup {
					t.Fatalf("round %d: append %v stored twice, at tokens %d and %d", round, key, prev, u.Token)
				}
				seen[key] = u.Token
				if a, ok := ackedAt[key]; ok && (a.stream != stream || a.token != u.Token) {
					t.Fatalf("round %d: append %v acknowledged as %s %d, stored as %s %d", round, key, a.stream, a.token, stream, u.Token)
				}
			}
		}
		for key, a := range ackedAt {
			if _, ok := seen[key]; !ok {
				t.Fatalf("round %d: acknowledged append %v (%s token %d) is missing after kill -9", round, key, a.stream, a.token)
			}
		}
		stored := 0
		for key := range seen {
			if key[0] == round {
				stored++
			}
		}
		// stored >= acknowledged: appends durable but killed before their
		// ack was printed are kept, which is correct.
		t.Logf("round %d: %d appends acknowledged, %d stored", round, len(ackedAt), stored)
		for _, stream := range crashStreams {
			cur, _ := l.CurrentToken(stream)
			if u := mustAppend(t, l, stream, `["after"]`); u.Token != cur+1 {
				t.Fatalf("round %d: %s continued at token %d, want %d", round, stream, u.Token, cur+1)
			}
		}
		closeTest(t, l)
	}
}
