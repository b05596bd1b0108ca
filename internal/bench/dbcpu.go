package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The PostgreSQL log's work is split between the master and the database
// server, so its CPU per row counts both: the server's processes (the
// postmaster and its children: backends, WAL writer, checkpointer) when
// the server runs on this machine. Other databases of the same server
// count too; the benchmark's scratch database is meant to be alone on it.

// postmasterOf finds the postmaster of the server behind dsn: the parent
// of the backend serving a connection. 0 when the server is not on this
// machine (or not in this PID namespace).
func postmasterOf(ctx context.Context, dsn string) int {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", backend))
	if err != nil {
		return 0
	}
	ppid, _ := statParent(string(b))
	return ppid
}

// statParent reads the parent pid from the text of /proc/PID/stat.
func statParent(stat string) (int, bool) {
	if i := strings.LastIndexByte(stat, ')'); i >= 0 {
		stat = stat[i+1:]
	}
	f := strings.Fields(stat)
	if len(f) < 2 {
		return 0, false
	}
	p, err := strconv.Atoi(f[1])
	return p, err == nil
}

// statChildrenCPU reads cutime+cstime (CPU of exited, reaped children)
// from the text of /proc/PID/stat.
func statChildrenCPU(stat string) time.Duration {
	if i := strings.LastIndexByte(stat, ')'); i >= 0 {
		stat = stat[i+1:]
	}
	f := strings.Fields(stat)
	if len(f) < 15 {
		return 0
	}
	cu, _ := strconv.ParseInt(f[13], 10, 64)
	cs, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(cu+cs) * 10 * time.Millisecond
}

// serverCPU is the CPU time of postmaster pm and every process it
// started, running or exited; 0 when pm is 0.
func serverCPU(pm int) time.Duration {
	if pm == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pm))
	if err != nil {
		return 0
	}
	total := statCPU(string(b)) + statChildrenCPU(string(b))
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if p, ok := statParent(string(b)); ok && p == pm {
			total += statCPU(string(b))
		}
	}
	return total
}

// cpuMark is the CPU clocks at the start of a phase.
type cpuMark struct {
	proc, self, db time.Duration
}

func (t *target) cpuMark() cpuMark {
	return cpuMark{proc: t.cpuTime(), self: t.selfCPU(), db: serverCPU(t.postmaster)}
}
