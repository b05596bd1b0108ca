// Package redistest starts a real redis-server for tests, on a loopback port
// in a temporary directory, and stops it when the test ends.
//
// Redis cannot listen on port 0 and report the port it got, so the helper
// asks the kernel for a free port, releases it and starts redis-server on
// it, retrying with a new port when redis-server could not bind.
package redistest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Binary is the redis-server the helper runs.
const Binary = "redis-server"

// Server is one redis-server process.
type Server struct {
	// Addr is 127.0.0.1:PORT.
	Addr string
	dir  string
	args []string
	cmd  *exec.Cmd
	// CAFile is the PEM file of the CA that signed the server's
	// certificate, when started with StartTLS.
	CAFile string
	tls    bool
	// exited is closed when the process has been waited for.
	exited chan struct{}
}

// StartRedis starts redis-server with extra config directives (for example
// "--requirepass", "secret") and returns its address and a stop function,
// which is also registered with t.Cleanup. When redis-server is not
// installed the test is skipped, or fails when CI=true.
func StartRedis(t testing.TB, args ...string) (addr string, stop func()) {
	s := Start(t, args...)
	return s.Addr, s.Stop
}

// Start is StartRedis returning the Server, for tests that restart it.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, &Server{dir: t.TempDir(), args: args})
}

// StartTLS starts redis-server serving TLS only, with a certificate for
// 127.0.0.1 signed by a fresh CA whose PEM file is Server.CAFile.
func StartTLS(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), tls: true}
	if err := writeCerts(s.dir); err != nil {
		t.Fatalf("redistest: make TLS certificates: %v", err)
	}
	s.CAFile = filepath.Join(s.dir, "ca.pem")
	s.args = append([]string{
		"--tls-cert-file", filepath.Join(s.dir, "server.pem"),
		"--tls-key-file", filepath.Join(s.dir, "server-key.pem"),
		"--tls-ca-cert-file", s.CAFile,
		"--tls-auth-clients", "no",
	}, args...)
	return start(t, s)
}

func start(t testing.TB, s *Server) *Server {
	t.Helper()
	RequireBinary(t)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
		if !strings.Contains(lastErr.Error(), "in use") {
			break
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// RequireBinary skips the test when redis-server is not installed, or fails
// it when CI=true (CI installs it; see .ci/run).
func RequireBinary(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		msg := "redistest: redis-server is not installed (Debian: apt-get install redis-server); the tests against a real Redis need it"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// Restart stops the server and starts it again on the same address, as an
// operator restarting Redis would (clients must reconnect).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.start()
		if err == nil {
			return
		}
		// The old socket can linger briefly; the address must stay the same.
		if !strings.Contains(err.Error(), "in use") || time.Now().After(deadline) {
			t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop terminates the server and waits for it; stopping twice is fine.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// LogTail returns the end of the server's log, for failure messages.
func (s *Server) LogTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

func (s *Server) logSays(text string) bool {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return err == nil && strings.Contains(string(b), text)
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	logFile := filepath.Join(s.dir, "redis.log")
	_ = os.Remove(logFile)
	listen := []string{"--port", port}
	if s.tls {
		listen = []string{"--port", "0", "--tls-port", port}
	}
	args := append(listen, "--bind", "127.0.0.1", "--dir", s.dir,
		"--logfile", logFile, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--protected-mode", "no")
	args = append(args, s.args...)
	cmd := exec.Command(Binary, args...)
	// Its own process group: a test binary killed mid-run leaves no
	// redis-server holding the terminal's signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", Binary, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited (%w): %s", waitErr, s.LogTail())
		default:
		}
		// The log, not a PING, says it is ours: another process may have
		// taken the port between freePort and the bind.
		if s.logSays("Ready to accept connections") && ready(s.Addr, s.tls) {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server did not answer PING on %s within 10s: %s", s.Addr, s.LogTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready tells whether a Redis answers on addr: +PONG, or -NOAUTH when it
// wants a password.
func ready(addr string, useTLS bool) bool {
	var conn net.Conn
	var err error
	if useTLS {
		// Only asks whether it answers; the tests check the certificate.
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // readiness probe of a test server
	} else {
		conn, err = net.DialTimeout("tcp", addr, time.Second)
	}
	if err != nil {
		return false
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
