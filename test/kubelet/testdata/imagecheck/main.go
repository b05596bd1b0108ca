// Command imagecheck is the workload of the test kubelet's image-mode
// tests: it reports, as JSON on stdout, who it runs as and what it can see
// and write, then exits.
package main

import (
	"encoding/json"
	"os"
	"path/filepath"
)

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func main() {
	out := map[string]any{"uid": os.Getuid(), "gid": os.Getgid(), "args": os.Args, "home": os.Getenv("HOME"), "path": os.Getenv("PATH")}
	groups, _ := os.Getgroups()
	out["groups"] = groups
	out["cwd"], _ = os.Getwd()
	for _, f := range []string{"/etc/hosts", "/etc/passwd", "/config/greeting"} {
		b, err := os.ReadFile(f)
		out["read:"+f] = string(b) + errString(err)
	}
	for _, d := range []string{"/data", "/", "/tmp"} {
		err := os.WriteFile(filepath.Join(d, "probe-file"), []byte("x"), 0o644)
		out["write:"+d] = errString(err)
	}
	_, err := os.Stat("/proc/self/exe")
	out["proc"] = errString(err)
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
