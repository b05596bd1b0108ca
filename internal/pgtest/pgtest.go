// Package pgtest starts a real PostgreSQL (Debian's package) for tests: initdb
// and postgres run as an unprivileged system user (PostgreSQL refuses to run
// as root) in a temporary directory, listening on a loopback port, with fsync
// on, and are stopped when the test ends.
//
// postgres cannot listen on port 0 and report the port it got, so the helper
// asks the kernel for a free port, releases it and starts postgres on it,
// retrying with a new port when postgres could not bind.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tcprepl/tcprepl/internal/testenv"
)

// RunAs is the system user initdb and postgres run as when the tests run as
// root.
const RunAs = "nobody"

// Server is one running PostgreSQL.
type Server struct {
	// Addr is 127.0.0.1:PORT.
	Addr string
	dir  string
	bin  string
	cred *syscall.Credential
	cmd  *exec.Cmd
	// exited is closed when the postgres process has been waited for.
	exited chan struct{}
	dbSeq  atomic.Int64
}

// BinDir returns the newest /usr/lib/postgresql/*/bin holding initdb and
// postgres, or "" when PostgreSQL is not installed.
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return versionOf(b) - versionOf(a)
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Require skips the test when PostgreSQL is not installed, or fails it in a
// CI run (testenv.SkipOrFail; CI installs it, see .ci/run). It returns the binary directory.
func Require(t testing.TB) string {
	t.Helper()
	bin := BinDir()
	if bin == "" {
		testenv.SkipOrFail(t, "pgtest: PostgreSQL is not installed (Debian: apt-get install postgresql); the tests against a real PostgreSQL need it")
	}
	return bin
}

// Start initialises a cluster in a temporary directory and starts postgres
// on a free loopback port. It is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(Require(t), t.TempDir())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

var shared struct {
	once sync.Once
	s    *Server
	dir  string
	err  error
}

// Shared returns one server for the whole test binary, started on first
// use: initdb takes seconds, so a package's tests share a server and each
// takes its own database (NewDatabase). The package's TestMain calls
// StopShared after m.Run.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := Require(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "pgtest-")
		if shared.err == nil {
			shared.s, shared.err = start(bin, shared.dir)
		}
	})
	if shared.err != nil {
		t.Fatalf("pgtest: shared server: %v", shared.err)
	}
	return shared.s
}

// StopShared stops the shared server, if one was started, and removes its
// directory.
func StopShared() {
	if shared.s != nil {
		shared.s.Stop()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
}

func start(bin, dir string) (*Server, error) {
	s := &Server{bin: bin, dir: dir}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	s.cred = cred
	if err := s.prepareDir(); err != nil {
		return nil, err
	}
	if err := s.initdb(); err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
		if !errors.Is(lastErr, errPortTaken) {
			break
		}
	}
	return nil, fmt.Errorf("start postgres: %w", lastErr)
}

// credential is the user to run PostgreSQL as: nil when the tests do not run
// as root (the current user is fine), RunAs otherwise.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(RunAs)
	if err != nil {
		return nil, fmt.Errorf("look up user %q to run PostgreSQL as (it refuses to run as root): %w", RunAs, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// prepareDir makes the temporary directory usable by the PostgreSQL user:
// t.TempDir's parent is private to root, so it gets search permission (the
// shared server's parent is the world-searchable temporary directory), and
// the directory itself is given to that user.
func (s *Server) prepareDir() error {
	if s.cred == nil {
		return nil
	}
	if parent := filepath.Dir(s.dir); parent != filepath.Clean(os.TempDir()) {
		if err := os.Chmod(parent, 0o711); err != nil {
			return fmt.Errorf("open %s to the PostgreSQL user: %w", parent, err)
		}
	}
	if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		return fmt.Errorf("give %s to the PostgreSQL user: %w", s.dir, err)
	}
	return nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logFile() string { return filepath.Join(s.dir, "postgres.log") }

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	// Its own process group: a test binary killed mid-run leaves no
	// postgres holding the terminal's signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	return cmd
}

func (s *Server) initdb() error {
	out, err := s.command("initdb", "-D", s.dataDir(), "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w: %s", err, out)
	}
	return nil
}

var errPortTaken = errors.New("port taken")

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	logf, err := os.OpenFile(s.logFile(), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create log file: %w", err)
	}
	defer logf.Close()
	cmd := s.command("postgres", "-D", s.dataDir(), "-p", port,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.dir,
		"-c", "fsync=on",
		"-c", "max_connections=100",
		"-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run postgres: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			tail := s.LogTail()
			if strings.Contains(tail, "could not bind") || strings.Contains(tail, "already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, tail)
			}
			return fmt.Errorf("postgres exited (%w): %s", waitErr, tail)
		default:
		}
		if s.ping() == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("postgres did not accept connections on %s within 30s: %s", s.Addr, s.LogTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// DSN is the connection URI of database as the superuser postgres.
func (s *Server) DSN(database string) string {
	return s.DSNAs("postgres", database)
}

// DSNAs is the connection URI of database as role (trust authentication:
// no password).
func (s *Server) DSNAs(role, database string) string {
	u := url.URL{Scheme: "postgres", User: url.User(role), Host: s.Addr, Path: "/" + database, RawQuery: "sslmode=disable"}
	return u.String()
}

// NewDatabase creates an empty database and returns its DSN: tests sharing
// one server each get their own.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", s.dbSeq.Add(1))
	s.Exec(t, "CREATE DATABASE "+name)
	return s.DSN(name)
}

// Exec runs statements as the superuser in the postgres database.
func (s *Server) Exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// Stop shuts postgres down (fast mode) and waits for it; stopping twice is
// fine.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Restart stops postgres and starts it again on the same address, as an
// operator restarting the database would (clients must reconnect).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			t.Fatalf("pgtest: restart postgres on %s: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogTail returns the end of the server's log, for failure messages.
func (s *Server) LogTail() string {
	b, err := os.ReadFile(s.logFile())
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
