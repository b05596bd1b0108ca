package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tcprepl/tcprepl/test/harness"
)

// pluginPath is a directory holding the built tcprepl binary as
// kubectl-tcprepl, as `make install-plugin` installs it, first on PATH.
func pluginPath(env *harness.Env) (string, error) {
	dir := filepath.Join(env.Dir, "plugin-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create the plugin directory: %w", err)
	}
	link := filepath.Join(dir, "kubectl-tcprepl")
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink(env.Tools.Tcprepl, link); err != nil {
			return "", fmt.Errorf("install the kubectl plugin: %w", err)
		}
	}
	return dir + string(os.PathListSeparator) + os.Getenv("PATH"), nil
}

// pluginStatus shows `kubectl tcprepl status` of the master: the built
// kubectl finds the plugin on PATH, as after `make install-plugin`.
func pluginStatus(ctx context.Context, env *harness.Env, master string) error {
	path, err := pluginPath(env)
	if err != nil {
		return err
	}
	args := []string{"tcprepl", "status", master, "--namespace", ns}
	step("kubectl %s   (the kubectl plugin, after make install-plugin)", strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.Tools.Cluster.Kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Cluster.Kubeconfig, "PATH="+path)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
