package kubelet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/tcprepl/tcprepl/test/internal/proc"
)

// This file is the container runtime of image mode (see image.go): a root
// per container start, a mount namespace with the volumes in it, chroot and
// the container's user.

// init keeps the main goroutine on the main thread, so that the main thread
// never runs startInRoot: a goroutine that ends locked to the main thread
// leaves it parked rather than retired, and /proc/self (the main thread's
// view) would then show a container's mounts.
func init() { runtime.LockOSThread() }

// bindMount puts a host path at a path inside the container's root.
type bindMount struct {
	src, dst string // dst is a path inside the container
	readOnly bool
}

// identity is who a container's process runs as.
type identity struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

// devices are bind-mounted from the host into the container's /dev.
var devices = []string{"null", "zero", "full", "random", "urandom"}

// inRoot joins a container path to the root on the host.
func inRoot(root, p string) string {
	return filepath.Join(root, filepath.FromSlash(path.Clean("/"+p)))
}

// prepareRoot makes a fresh copy of the image's root for one container start
// with mount points for binds, /proc, /dev, /sys and the working directory.
func prepareRoot(imageRoot, root string, binds []bindMount, workDir string) error {
	if err := os.RemoveAll(root); err != nil {
		return fmt.Errorf("clear the container root %s: %w", root, err)
	}
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return err
	}
	if err := cloneTree(imageRoot, root); err != nil {
		return fmt.Errorf("copy the image's root file system: %w", err)
	}
	for _, d := range []string{"proc", "dev", "sys", workDir} {
		if err := os.MkdirAll(inRoot(root, d), 0o755); err != nil {
			return fmt.Errorf("create %s in the container root: %w", d, err)
		}
	}
	for _, b := range binds {
		dst := inRoot(root, b.dst)
		st, err := os.Stat(b.src)
		if err != nil {
			return fmt.Errorf("volume source %s: %w", b.src, err)
		}
		if st.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("create mount point %s: %w", b.dst, err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", b.dst, err)
		}
		if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("create mount point %s: %w", b.dst, err)
			}
			f.Close()
		}
	}
	return nil
}

func sysMount(src, dst, fstype string, flags uintptr, data string) error {
	if err := syscall.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", src, dst, err)
	}
	return nil
}

// setupMounts runs on a locked thread that has its own mount namespace: it
// builds the container's view under root.
func setupMounts(root string, binds []bindMount, readOnlyRoot bool) error {
	// Nothing mounted here may propagate back to the host.
	if err := sysMount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return err
	}
	// The root becomes a mount of its own, so that it can be read-only.
	if err := sysMount(root, root, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	for _, b := range binds {
		dst := inRoot(root, b.dst)
		if err := sysMount(b.src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return err
		}
		if b.readOnly {
			if err := sysMount("", dst, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
				return err
			}
		}
	}
	if err := sysMount("proc", inRoot(root, "/proc"), "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := sysMount("/sys", inRoot(root, "/sys"), "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	if err := sysMount("", inRoot(root, "/sys"), "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
		return err
	}
	dev := inRoot(root, "/dev")
	if err := sysMount("tmpfs", dev, "tmpfs", syscall.MS_NOSUID|syscall.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return err
	}
	for _, d := range devices {
		f, err := os.OpenFile(filepath.Join(dev, d), os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return fmt.Errorf("create /dev/%s: %w", d, err)
		}
		f.Close()
		if err := sysMount("/dev/"+d, filepath.Join(dev, d), "", syscall.MS_BIND, ""); err != nil {
			return err
		}
	}
	if readOnlyRoot {
		if err := sysMount("", root, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			return err
		}
	}
	return nil
}

// Container processes are started from a locked OS thread that enters the
// container's mount namespace first, because the child inherits the
// namespace of the thread that forks it. That thread must not end
// afterwards: the kernel sends a parent-death signal (proc.Start sets
// SIGKILL) to every child a thread forked when that thread ends, and a
// pooled thread may already have forked etcd, the API server or other pods.
// So the thread goes back to the host's mount namespace and working
// directory (those of the main thread, which init keeps out of this) and
// is unlocked; if that fails it is parked for good instead of ending. Its
// file system context stays unshared, which only matters to os.Chdir, which
// nothing here uses.

// restoreHostNamespace moves the calling thread back to the main thread's
// mount namespace and working directory.
func restoreHostNamespace() error {
	ns, err := unix.Open("/proc/self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the host's mount namespace: %w", err)
	}
	defer func() { _ = unix.Close(ns) }()
	if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("return to the host's mount namespace: %w", err)
	}
	cwd, err := unix.Open("/proc/self/cwd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the working directory: %w", err)
	}
	defer func() { _ = unix.Close(cwd) }()
	if err := unix.Fchdir(cwd); err != nil {
		return fmt.Errorf("return to the working directory: %w", err)
	}
	return nil
}

// inNamespace runs enter (which moves a locked thread into a mount
// namespace) and then start (which forks) on that thread, returns the
// thread to the host's namespace (see above) and returns the first error.
func inNamespace(enter func() error, start func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := enter()
		if err == nil {
			err = start()
		}
		if rerr := restoreHostNamespace(); rerr != nil {
			errc <- errors.Join(err, rerr)
			select {} // parked: ending this thread would kill its children
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// startInRoot starts cmd (chrooted into root, with its credentials set by
// the caller) in a new mount namespace holding binds.
func startInRoot(name string, cmd *exec.Cmd, root string, binds []bindMount, readOnlyRoot bool) (*proc.Process, error) {
	var p *proc.Process
	err := inNamespace(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("new mount namespace (image mode needs root with CAP_SYS_ADMIN): %w", err)
		}
		return setupMounts(root, binds, readOnlyRoot)
	}, func() error {
		var err error
		p, err = proc.Start(name, cmd)
		return err
	})
	return p, err
}

// runInContainer runs cmd in the mount namespace of the running process pid
// (chrooted by the caller into the same root), for exec probes.
func runInContainer(pid int, cmd *exec.Cmd) error {
	var done <-chan error
	err := inNamespace(func() error {
		fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open the container's mount namespace: %w", err)
		}
		defer func() { _ = unix.Close(fd) }()
		// setns into a mount namespace needs a file system context of the
		// thread's own.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare the file system context: %w", err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("join the container's mount namespace: %w", err)
		}
		return nil
	}, func() error {
		if err := cmd.Start(); err != nil {
			return err
		}
		c := make(chan error, 1)
		go func() { c <- cmd.Wait() }()
		done = c
		return nil
	})
	if err != nil {
		return err
	}
	return <-done
}

// resolveIdentity is who a container runs as: runAsUser/runAsGroup of the
// container, else of the pod, else the image's USER (numeric, or a name
// from the image's /etc/passwd and /etc/group); supplementary groups are
// fsGroup and supplementalGroups. runAsNonRoot is enforced as the kubelet
// does: a root user, or a user name it cannot verify, is refused.
func resolveIdentity(pod *corev1.Pod, c *corev1.Container, imageUser, root string) (identity, error) {
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	csc := c.SecurityContext
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	pick := func(a, b *int64) *int64 {
		if a != nil {
			return a
		}
		return b
	}
	runAsUser, runAsGroup := pick(csc.RunAsUser, psc.RunAsUser), pick(csc.RunAsGroup, psc.RunAsGroup)
	nonRoot := csc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	users, groups := readIDFile(root, "passwd"), readIDFile(root, "group")
	userPart, groupPart, _ := strings.Cut(imageUser, ":")
	var id identity
	if runAsUser != nil {
		id.uid = uint32(*runAsUser)
	} else if userPart == "" {
		id.uid = 0
	} else if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		id.uid = uint32(n)
	} else {
		if nonRoot != nil && *nonRoot {
			return id, fmt.Errorf("%w: container %q: image has non-numeric user (%s), cannot verify user is non-root", errConfig, c.Name, userPart)
		}
		found := false
		for _, u := range users {
			if u.name == userPart {
				id.uid, found = uint32(u.id), true
			}
		}
		if !found {
			return id, fmt.Errorf("container %q: unable to find user %s: no matching entries in the image's passwd file", c.Name, userPart)
		}
	}
	if nonRoot != nil && *nonRoot && id.uid == 0 {
		return id, fmt.Errorf("%w: container %q has runAsNonRoot and image will run as root", errConfig, c.Name)
	}
	id.home = "/"
	primary := -1
	for _, u := range users {
		if uint32(u.id) == id.uid {
			id.home, primary = u.home, u.gid
			break
		}
	}
	switch {
	case runAsGroup != nil:
		id.gid = uint32(*runAsGroup)
	case groupPart != "":
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			id.gid = uint32(n)
		} else {
			found := false
			for _, g := range groups {
				if g.name == groupPart {
					id.gid, found = uint32(g.id), true
				}
			}
			if !found {
				return id, fmt.Errorf("container %q: unable to find group %s: no matching entries in the image's group file", c.Name, groupPart)
			}
		}
	case primary >= 0:
		id.gid = uint32(primary)
	}
	if psc.FSGroup != nil {
		id.groups = append(id.groups, uint32(*psc.FSGroup))
	}
	for _, g := range psc.SupplementalGroups {
		id.groups = append(id.groups, uint32(g))
	}
	return id, nil
}

// lookPathInRoot finds a program the way a runtime does: a name with a
// slash as it is, else the first match in the container's PATH, inside the
// container's root.
func lookPathInRoot(root, prog, pathEnv string) (string, error) {
	if strings.Contains(prog, "/") {
		if !path.IsAbs(prog) {
			return prog, nil
		}
		if _, err := os.Stat(inRoot(root, prog)); err != nil {
			return "", fmt.Errorf("exec: %s: no such file or directory in the image", prog)
		}
		return prog, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !path.IsAbs(dir) {
			continue
		}
		p := path.Join(dir, prog)
		if st, err := os.Stat(inRoot(root, p)); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH (%s) of the image", prog, pathEnv)
}

// volumeOwnership gives a volume's files the ownership a kubelet gives
// them: with fsGroup, group-owned by it, group-readable (read-only volume
// types) or group-writable, directories setgid, as SetVolumeOwnership does.
func volumeOwnership(dir string, fsGroup int64, readOnly bool) error {
	return filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(p, -1, int(fsGroup)); err != nil {
			return err
		}
		mode := info.Mode() & (os.ModePerm | os.ModeSticky | os.ModeSetgid)
		switch {
		case info.IsDir():
			mode |= 0o070 | os.ModeSetgid
			if readOnly {
				mode = mode&^0o020 | 0o050
			}
		case readOnly:
			mode |= 0o040
		default:
			mode |= 0o060
		}
		return os.Chmod(p, mode)
	})
}
