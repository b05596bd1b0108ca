package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func (t *target) peakRSS() (int64, string) {
	if t.pid == 0 {
		return 0, "unknown (give --master-pid)"
	}
	hwm, err := procStatus(t.pid, "VmHWM")
	if err != nil {
		return 0, "unknown: " + err.Error()
	}
	if t.m != nil {
		return hwm, "benchmark process (master and its clients)"
	}
	return hwm, "master process"
}

// cpuTime is the user+system CPU time of the measured process so far.
func (t *target) cpuTime() time.Duration { return processCPU(t.pid) }

// selfCPU is this process's CPU time when the master runs elsewhere.
func (t *target) selfCPU() time.Duration {
	if t.m != nil {
		return 0
	}
	return processCPU(os.Getpid())
}

// processCPU is the user+system CPU time of process pid; 0 when unknown.
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return statCPU(string(b))
}

// statCPU reads utime+stime from the text of /proc/PID/stat; 0 when it has
// too few fields.
func statCPU(stat string) time.Duration {
	// Fields after the parenthesised command name (which may hold spaces
	// and parentheses); utime and stime are the 14th and 15th fields
	// overall, in clock ticks (100 per second on Linux).
	rest := stat
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// loadAverage is the 1, 5 and 15 minute load averages; "" when unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return loadAverageOf(string(b))
}

// loadAverageOf takes the three load averages from the text of
// /proc/loadavg; "" when it has fewer fields.
func loadAverageOf(loadavg string) string {
	f := strings.Fields(loadavg)
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuSince fills a CPU figure for a phase that began at m and wall0.
func (t *target) cpuSince(m cpuMark, wall0 time.Time, rowsIn, rowsOut int64) CPU {
	used := (t.cpuTime() - m.proc).Seconds()
	wall := time.Since(wall0).Seconds()
	c := CPU{CPUSeconds: used, ProcessCPUUtilised: used / wall, LoadAverageAtTheTime: loadAverage()}
	if t.m == nil {
		c.ClientCoresUsed = (t.selfCPU() - m.self).Seconds() / wall
	}
	if t.postmaster != 0 {
		db := (serverCPU(t.postmaster) - m.db).Seconds()
		c.DatabaseCoresUsed = db / wall
		if rows := max(rowsIn, 0); rows > 0 {
			c.DatabaseCPUMicrosPerRow = db * 1e6 / float64(rows)
		} else if rowsOut > 0 {
			c.DatabaseCPUMicrosPerRow = db * 1e6 / float64(rowsOut)
		}
	}
	if rowsIn > 0 {
		c.CPUMicrosPerRowIn = used * 1e6 / float64(rowsIn)
	}
	if rowsOut > 0 {
		c.CPUMicrosPerRowOut = used * 1e6 / float64(rowsOut)
	}
	return c
}

// procStatus reads one "Key:   N kB" line of /proc/PID/status, in bytes.
func procStatus(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	v, err := statusField(string(b), key)
	if err != nil {
		return 0, fmt.Errorf("%w in /proc/%d/status", err, pid)
	}
	return v, nil
}

// statusField reads one "Key:   N kB" line of the text of /proc/PID/status,
// in bytes.
func statusField(status, key string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", key, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s", key)
}
