package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// alive says whether pid runs. A killed process whose parent died stays a
// zombie until init reaps it, and init in a container may never do so:
// zombies count as dead.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestStopKillsTheGroup starts a shell that starts a child ignoring SIGTERM:
// Stop must end both, the child with SIGKILL after the grace period.
func TestStopKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := exec.Command("sh", "-c", `sh -c 'trap "" TERM; echo $$ > `+pidFile+`; while :; do sleep 0.1; done' & wait`)
	p, err := Start("group", cmd)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(20 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("child never started")
	}
	start := time.Now()
	if err := p.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %s", d)
	}
	// The child is reaped by init once killed; give it a moment.
	for i := 0; i < 50 && alive(child); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(child) {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Fatalf("child %d survived Stop", child)
	}
}

func TestExitCode(t *testing.T) {
	p, err := Start("exit3", exec.Command("sh", "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.ExitCode(); got != 3 {
		t.Fatalf("exit code %d, want 3", got)
	}
	if p.Err() == nil {
		t.Fatal("Err() is nil for a failed process")
	}

	p, err = Start("sleep", exec.Command("sleep", "30"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := p.ExitCode(); got != 128+int(syscall.SIGKILL) {
		t.Fatalf("exit code after SIGKILL %d, want %d", got, 128+int(syscall.SIGKILL))
	}
	// Signalling or stopping an exited process is not an error.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailure(t *testing.T) {
	_, err := Start("missing", exec.Command(filepath.Join(t.TempDir(), "no-such-program")))
	if err == nil || !strings.Contains(err.Error(), "start missing") {
		t.Fatalf("err = %v, want a start error naming the process", err)
	}
}
