package kubelet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tcprepl/tcprepl/test/internal/proc"
)

// launch is how a running image-mode container was started; exec probes
// run the same way inside it.
type launch struct {
	root    string
	environ []string
	workDir string
	cred    *syscall.Credential
}

// imageCommandLine applies Kubernetes' rules to the image's entrypoint and
// cmd: command replaces both, args replace cmd.
func imageCommandLine(c *corev1.Container, cfg ImageConfig, vars map[string]string) ([]string, error) {
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(append(argv, c.Command...), c.Args...)
	case len(c.Args) > 0:
		argv = append(append(argv, cfg.Entrypoint...), c.Args...)
	default:
		argv = append(append(argv, cfg.Entrypoint...), cfg.Cmd...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: container %q has no command and its image %q has no entrypoint or cmd", errConfig, c.Name, c.Image)
	}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for i := range argv {
		argv[i] = expandVars(argv[i], lookup)
	}
	return argv, nil
}

// startFromImage starts a container from its image: see image.go.
func (w *podWorker) startFromImage(c *container, lenient bool) (*proc.Process, error) {
	w.mu.Lock()
	pod := w.pod.DeepCopy()
	w.mu.Unlock()
	img, err := w.k.images.lookup(c.spec.Image)
	if err != nil {
		return nil, err
	}
	imageRoot, err := w.k.images.root(img)
	if err != nil {
		return nil, err
	}
	b := w.k.builder(pod, w.ip, w.dir)
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	dirs, err := w.volumeDirs(ctx, b)
	if err != nil {
		return nil, err
	}
	mounts, err := containerMounts(&c.spec, dirs)
	if err != nil {
		return nil, err
	}
	id, err := resolveIdentity(pod, &c.spec, img.config.User, imageRoot)
	if err != nil {
		return nil, err
	}
	var base []envVar
	imageVars := map[string]bool{}
	for _, kv := range img.config.Env {
		k, v, _ := strings.Cut(kv, "=")
		base = append(base, envVar{name: k, value: v})
		imageVars[k] = true
	}
	if !imageVars["PATH"] {
		base = append(base, envVar{name: "PATH", value: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
	}
	if !imageVars["HOME"] {
		base = append(base, envVar{name: "HOME", value: id.home})
	}
	base = append(base,
		envVar{name: "HOSTNAME", value: pod.Name},
		envVar{name: "POD_IP", value: w.ip}, envVar{name: "TCPREPL_POD_IP", value: w.ip},
		// Every pod gets the API server's address, which in-cluster
		// configuration reads with the ServiceAccount token's files.
		envVar{name: "KUBERNETES_SERVICE_HOST", value: w.k.apiHost}, envVar{name: "KUBERNETES_SERVICE_PORT", value: w.k.apiPort},
	)
	env, vars, err := b.env(ctx, &c.spec, base)
	if err != nil {
		return nil, err
	}
	argv, err := imageCommandLine(&c.spec, img.config, vars)
	if err != nil {
		return nil, err
	}
	rw := newRewriter(w.ip, pod.Namespace, nil, w.k.proxy.resolve)
	rw.lenient = lenient
	for i := 1; i < len(argv); i++ {
		if argv[i], err = rw.rewrite(argv[i]); err != nil {
			return nil, fmt.Errorf("container %q arg %d: %w", c.spec.Name, i, err)
		}
	}
	prog, err := lookPathInRoot(imageRoot, argv[0], vars["PATH"])
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", c.spec.Name, err)
	}
	environ := make([]string, 0, len(env))
	for _, e := range env {
		v := e.value
		if !e.fromKubelet {
			if v, err = rw.rewrite(v); err != nil {
				return nil, fmt.Errorf("container %q env %s: %w", c.spec.Name, e.name, err)
			}
		}
		environ = append(environ, e.name+"="+v)
	}
	workDir := c.spec.WorkingDir
	if workDir == "" {
		workDir = img.config.WorkingDir
	}
	if workDir == "" {
		workDir = "/"
	}

	// /etc/hosts and /etc/hostname as a kubelet writes them.
	hosts := filepath.Join(w.dir, "etc-hosts")
	if err := os.WriteFile(hosts, fmt.Appendf(nil, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", w.ip, pod.Name), 0o644); err != nil {
		return nil, fmt.Errorf("write /etc/hosts: %w", err)
	}
	hostname := filepath.Join(w.dir, "etc-hostname")
	if err := os.WriteFile(hostname, []byte(pod.Name+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write /etc/hostname: %w", err)
	}
	binds := []bindMount{{src: hosts, dst: "/etc/hosts"}, {src: hostname, dst: "/etc/hostname", readOnly: true}}
	for i, m := range mounts {
		binds = append(binds, bindMount{src: m.hostPath, dst: m.containerPath, readOnly: c.spec.VolumeMounts[i].ReadOnly})
	}
	root := filepath.Join(w.dir, "containers", c.spec.Name, "rootfs")
	if err := prepareRoot(imageRoot, root, binds, workDir); err != nil {
		return nil, err
	}

	logPath := w.k.LogPath(pod.Namespace, pod.Name, c.spec.Name)
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s testkubelet: starting %q from image %s (%s) as %d:%d\n", time.Now().Format(time.RFC3339Nano), argv, img.ref, img.digest, id.uid, id.gid)
	cred := &syscall.Credential{Uid: id.uid, Gid: id.gid, Groups: id.groups}
	cmd := &exec.Cmd{
		Path: prog, Args: argv, Env: environ, Dir: workDir, Stdout: f, Stderr: f,
		SysProcAttr: &syscall.SysProcAttr{Chroot: root, Credential: cred},
	}
	readOnlyRoot := c.spec.SecurityContext != nil && c.spec.SecurityContext.ReadOnlyRootFilesystem != nil && *c.spec.SecurityContext.ReadOnlyRootFilesystem
	p, err := startInRoot(pod.Namespace+"/"+pod.Name+"/"+c.spec.Name, cmd, root, binds, readOnlyRoot)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	c.launch = &launch{root: root, environ: environ, workDir: workDir, cred: cred}
	c.imageID = imageName(img.ref) + "@" + img.digest
	w.mu.Unlock()
	w.k.logf("pod %s container %s: started pid %d from %s as %d:%d: %q", w.key, c.spec.Name, p.Pid(), img.ref, id.uid, id.gid, argv)
	return p, nil
}

// execProbeInImage runs an exec probe inside the running container: its
// mount namespace, root, user and environment.
func (w *podWorker) execProbeInImage(ctx context.Context, c *container, command []string) bool {
	w.mu.Lock()
	l, p := c.launch, c.proc
	w.mu.Unlock()
	if l == nil || p == nil {
		return false
	}
	pathEnv := ""
	for _, kv := range l.environ {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	prog, err := lookPathInRoot(l.root, command[0], pathEnv)
	if err != nil {
		return false
	}
	cmd := exec.CommandContext(ctx, prog)
	cmd.Args = command
	cmd.Env, cmd.Dir = l.environ, l.workDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: l.root, Credential: l.cred}
	return runInContainer(p.Pid(), cmd) == nil
}
