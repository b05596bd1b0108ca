package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// KubeVersion is the Kubernetes version the Makefile builds into
// bin/k8s/<KubeVersion>; the binaries are looked up there.
const KubeVersion = "1.37.2"

// ErrBinaryNotFound is returned when a control-plane binary is missing. Tests
// use errors.Is on it to skip (rather than fail) on machines where `make
// tools` has not been run.
var ErrBinaryNotFound = errors.New("binary not found")

// Binaries are the paths of the programs a cluster is made of.
type Binaries struct {
	Etcd              string
	APIServer         string
	ControllerManager string
	Kubectl           string
}

// BinariesFromEnv finds the control-plane binaries (and kubectl, if built)
// the way the Makefile lays
// them out: KUBEBUILDER_ASSETS (etcd, kube-apiserver, kubectl),
// TCPREPL_KUBE_CONTROLLER_MANAGER and TCPREPL_KUBECTL first, then
// <repo>/bin/k8s/<KubeVersion>, then <repo>/bin. repoRoot may be empty, in
// which case it is found by walking up from the working directory to go.mod.
func BinariesFromEnv(repoRoot string) (Binaries, error) {
	if repoRoot == "" {
		root, err := RepoRoot()
		if err != nil {
			return Binaries{}, err
		}
		repoRoot = root
	}
	var dirs []string
	if assets := os.Getenv("KUBEBUILDER_ASSETS"); assets != "" {
		dirs = append(dirs, assets)
	}
	dirs = append(dirs, filepath.Join(repoRoot, "bin", "k8s", KubeVersion), filepath.Join(repoRoot, "bin"))

	var b Binaries
	var errs []error
	find := func(dst *string, envVar, name string, required bool) {
		if v := os.Getenv(envVar); envVar != "" && v != "" {
			if isExecutable(v) {
				if abs, err := filepath.Abs(v); err == nil {
					v = abs
				}
				*dst = v
				return
			}
		}
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if isExecutable(p) {
				*dst = p
				return
			}
		}
		if required {
			errs = append(errs, fmt.Errorf("%w: %s (looked in $%s and %v; run `make tools`)", ErrBinaryNotFound, name, envVar, dirs))
		}
	}
	find(&b.Etcd, "", "etcd", true)
	find(&b.APIServer, "", "kube-apiserver", true)
	find(&b.ControllerManager, "TCPREPL_KUBE_CONTROLLER_MANAGER", "kube-controller-manager", true)
	// kubectl is not part of the cluster; callers that need it check
	// Kubectl themselves.
	find(&b.Kubectl, "TCPREPL_KUBECTL", "kubectl", false)
	return b, errors.Join(errs...)
}

// RepoRoot walks up from the working directory to the directory holding
// go.mod, so tests in any package find bin/ the same way.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	if err != nil || st.IsDir() {
		return false
	}
	return st.Mode()&0o111 != 0
}

// LookBinary resolves a program by environment variable, then repo bin/
// paths, then PATH. It is used for helm and tcprepl.
func LookBinary(envVar string, candidates ...string) (string, error) {
	if v := os.Getenv(envVar); v != "" {
		if isExecutable(v) {
			// Absolute, because the path is handed to processes (pods)
			// that run in other working directories.
			return filepath.Abs(v)
		}
		return "", fmt.Errorf("%w: $%s=%s is not an executable file", ErrBinaryNotFound, envVar, v)
	}
	for _, c := range candidates {
		if filepath.IsAbs(c) {
			if isExecutable(c) {
				return c, nil
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: set $%s or build one of %v", ErrBinaryNotFound, envVar, candidates)
}
