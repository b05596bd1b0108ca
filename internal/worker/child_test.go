package worker

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
)

// childProc is the worker running in a child process.
type childProc struct {
	cmd  *exec.Cmd
	errb *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func startChild(t *testing.T, master, state, sink string) (*childProc, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_MASTER="+master, "CHILD_STATE="+state, "CHILD_SINK="+sink)
	c := &childProc{cmd: cmd, errb: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.errb
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *childProc) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *childProc) stderr() string {
	c.errb.mu.Lock()
	defer c.errb.mu.Unlock()
	return c.errb.b.String()
}

// kill sends SIGKILL, the signal nothing can catch, and waits for the exit.
func (c *childProc) kill(t *testing.T) {
	t.Helper()
	if !c.exited() {
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && !c.exited() {
			t.Fatalf("kill child: %v", err)
		}
	}
	<-c.done
}
