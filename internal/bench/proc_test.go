package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestStatusField(t *testing.T) {
	const status = "Name:\ttcprepl\nState:\tS (sleeping)\nVmPeak:\t 2345678 kB\nVmHWM:\t  123456 kB\nVmRSS:\t   98765 kB\nThreads:\t12\nVmBad:\tlots kB\nVmEmpty:\n"
	for name, tc := range map[string]struct {
		status, key string
		want        int64
		wantErr     string
	}{
		"peak RSS":               {status: status, key: "VmHWM", want: 123456 << 10},
		"RSS":                    {status: status, key: "VmRSS", want: 98765 << 10},
		"a field without kB":     {status: status, key: "Threads", want: 12 << 10},
		"key is a prefix of one": {status: status, key: "Vm", wantErr: "no Vm"},
		"missing key":            {status: status, key: "VmSwap", wantErr: "no VmSwap"},
		"not a number":           {status: status, key: "VmBad", wantErr: `VmBad: strconv.ParseInt: parsing "lots"`},
		"no value":               {status: status, key: "VmEmpty", wantErr: "no VmEmpty"},
		"empty file":             {status: "", key: "VmHWM", wantErr: "no VmHWM"},
		"last line without newline": {
			status: "VmRSS:\t 1 kB", key: "VmRSS", want: 1024,
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := statusField(tc.status, tc.key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("statusField: %d, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("statusField = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestProcStatusOfThisProcess(t *testing.T) {
	rss, err := procStatus(os.Getpid(), "VmRSS")
	if err != nil || rss <= 0 {
		t.Fatalf("procStatus(self, VmRSS) = %d, %v", rss, err)
	}
	if _, err := procStatus(os.Getpid(), "NoSuchKey"); err == nil || !strings.Contains(err.Error(), "no NoSuchKey in /proc/") {
		t.Fatalf("a missing key: %v", err)
	}
	if _, err := procStatus(-1, "VmRSS"); err == nil {
		t.Fatal("a process that does not exist read without an error")
	}
}

func TestStatCPU(t *testing.T) {
	// Fields 3 onward of a real /proc/PID/stat: utime 1234 and stime 566
	// ticks are the 12th and 13th after the command name.
	const tail = " S 1 2 3 4 5 6 7 8 9 10 1234 566 0 0 20 0 12 0 100 200 300"
	for name, tc := range map[string]struct {
		stat string
		want time.Duration
	}{
		"plain command":               {stat: "4242 (tcprepl)" + tail, want: 18 * time.Second},
		"command with spaces":         {stat: "4242 (tcprepl master)" + tail, want: 18 * time.Second},
		"command with parentheses":    {stat: "4242 (a) b (c))" + tail, want: 18 * time.Second},
		"no CPU yet":                  {stat: "1 (x) S 1 2 3 4 5 6 7 8 9 10 0 0", want: 0},
		"too few fields":              {stat: "1 (x) S 1 2 3 4 5 6 7 8 9 10 1234", want: 0},
		"empty":                       {stat: "", want: 0},
		"unparsable ticks count as 0": {stat: "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 7", want: 70 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			if got := statCPU(tc.stat); got != tc.want {
				t.Fatalf("statCPU(%q) = %s, want %s", tc.stat, got, tc.want)
			}
		})
	}
}

func TestLoadAverageOf(t *testing.T) {
	for name, tc := range map[string]struct {
		loadavg, want string
	}{
		"real file":      {loadavg: "13.27 15.87 18.41 9/1234 56789\n", want: "13.27 15.87 18.41"},
		"three fields":   {loadavg: "0.00 0.01 0.05", want: "0.00 0.01 0.05"},
		"too few fields": {loadavg: "0.00 0.01", want: ""},
		"empty":          {loadavg: "", want: ""},
	} {
		t.Run(name, func(t *testing.T) {
			if got := loadAverageOf(tc.loadavg); got != tc.want {
				t.Fatalf("loadAverageOf(%q) = %q, want %q", tc.loadavg, got, tc.want)
			}
		})
	}
}
