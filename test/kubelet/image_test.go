package kubelet

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// layerFile is one entry of a test image's layer.
type layerFile struct {
	name     string
	dir      bool
	mode     int64
	uid, gid int
	data     []byte
}

func writeBlob(t *testing.T, layout string, b []byte) ociDescriptor {
	t.Helper()
	sum := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(sum[:])
	p := filepath.Join(layout, "blobs", "sha256", hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ociDescriptor{Digest: d, Size: int64(len(b))}
}

// writeTestLayout writes an OCI image layout with one image, the way
// hack/image does (which the test kubelet cannot import: another module).
func writeTestLayout(t *testing.T, layout, ref string, cfg ImageConfig, files []layerFile) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: time.Unix(0, 0)}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(tb.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	layer := writeBlob(t, layout, gz.Bytes())
	layer.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
	cb, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "config": cfg})
	config := writeBlob(t, layout, cb)
	config.MediaType = "application/vnd.oci.image.config.v1+json"
	mb, _ := json.Marshal(ociManifest{MediaType: "application/vnd.oci.image.manifest.v1+json", Config: config, Layers: []ociDescriptor{layer}})
	manifest := writeBlob(t, layout, mb)
	manifest.MediaType = "application/vnd.oci.image.manifest.v1+json"
	manifest.Annotations = map[string]string{"io.containerd.image.name": ref}
	ib, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []ociDescriptor{manifest}})
	if err := os.WriteFile(filepath.Join(layout, "index.json"), ib, 0o644); err != nil {
		t.Fatal(err)
	}
}

func buildStatic(t *testing.T, pkg string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "prog")
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: image mode chroots and mounts, which needs root")
	}
}

const testImageRef = "example.com/check:v1"

// testImage is a distroless-like image: passwd/group with nonroot 65532,
// /tmp, /home/nonroot, the program at /usr/local/bin/check, and
// /bin/dynamic, a program that needs libc the image does not have.
func testImage(t *testing.T) *imageStore {
	t.Helper()
	check := buildStatic(t, "./testdata/imagecheck")
	dynamic, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(t.TempDir(), "oci")
	writeTestLayout(t, layout, testImageRef, ImageConfig{
		User: "65532:65532", Entrypoint: []string{"/usr/local/bin/check"}, Cmd: []string{"from-cmd"},
		Env: []string{"PATH=/usr/local/bin:/bin"}, WorkingDir: "/home/nonroot",
	}, []layerFile{
		{name: "bin", dir: true, mode: 0o755},
		{name: "bin/dynamic", mode: 0o755, data: dynamic},
		{name: "etc", dir: true, mode: 0o755},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "home", dir: true, mode: 0o755},
		{name: "home/nonroot", dir: true, mode: 0o700, uid: 65532, gid: 65532},
		{name: "tmp", dir: true, mode: 0o1777},
		{name: "usr", dir: true, mode: 0o755},
		{name: "usr/local", dir: true, mode: 0o755},
		{name: "usr/local/bin", dir: true, mode: 0o755},
		{name: "usr/local/bin/check", mode: 0o755, data: check},
	})
	s, err := newImageStore(filepath.Join(t.TempDir(), "images"), []string{layout})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runCheck runs argv from the test image the way startFromImage does and
// returns what imagecheck reported.
func runCheck(t *testing.T, s *imageStore, id identity, binds []bindMount, readOnlyRoot bool, argv ...string) (map[string]any, error) {
	t.Helper()
	img, err := s.lookup(testImageRef)
	if err != nil {
		t.Fatal(err)
	}
	imageRoot, err := s.root(img)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := prepareRoot(imageRoot, root, binds, "/home/nonroot"); err != nil {
		t.Fatal(err)
	}
	prog, err := lookPathInRoot(imageRoot, argv[0], "/usr/local/bin:/bin")
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	outFile := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := &exec.Cmd{Path: prog, Args: argv, Env: []string{"HOME=" + id.home}, Dir: "/home/nonroot", Stdout: f, Stderr: &stderr,
		SysProcAttr: &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: id.uid, Gid: id.gid, Groups: id.groups}}}
	p, err := startInRoot("check", cmd, root, binds, readOnlyRoot)
	if err != nil {
		return nil, err
	}
	if code := p.ExitCode(); code != 0 {
		t.Fatalf("check exited %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	stdout.Write(b)
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("check printed %q: %v", stdout.String(), err)
	}
	// The container's mounts stay in its namespace.
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), root) {
		t.Errorf("the container's mounts leaked into the host's namespace:\n%s", mi)
	}
	return out, nil
}

// TestImageContainerRuntime: a container from an image runs as its user in
// its own root, sees its volumes at their paths, can write where its user
// may (a volume owned through fsGroup) and nowhere else (a read-only root,
// a root-owned claim without fsGroup).
func TestImageContainerRuntime(t *testing.T) {
	requireRoot(t)
	s := testImage(t)
	nonroot := identity{uid: 65532, gid: 65532, home: "/home/nonroot"}
	withFSGroup := nonroot
	withFSGroup.groups = []uint32{65532}

	tests := map[string]struct {
		id           identity
		fsGroup      *int64
		readOnlyRoot bool
		want         map[string]string // key -> substring ("" means no error)
	}{
		"fsGroup makes a root-owned claim writable; read-only root": {
			id: withFSGroup, fsGroup: ptr.To[int64](65532), readOnlyRoot: true,
			want: map[string]string{"write:/data": "", "write:/": "read-only file system", "write:/tmp": "read-only file system"},
		},
		"without fsGroup the claim is root's and not writable": {
			id:   nonroot,
			want: map[string]string{"write:/data": "permission denied", "write:/tmp": "", "write:/": "permission denied"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "claim")
			if err := os.Mkdir(data, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.fsGroup != nil {
				if err := volumeOwnership(data, *tc.fsGroup, false); err != nil {
					t.Fatal(err)
				}
			}
			config := filepath.Join(t.TempDir(), "config")
			if err := os.Mkdir(config, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(config, "greeting"), []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			hosts := filepath.Join(t.TempDir(), "hosts")
			if err := os.WriteFile(hosts, []byte("127.0.0.1\tlocalhost\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			binds := []bindMount{{src: data, dst: "/data"}, {src: config, dst: "/config", readOnly: true}, {src: hosts, dst: "/etc/hosts"}}
			out, err := runCheck(t, s, tc.id, binds, tc.readOnlyRoot, "check", "arg")
			if err != nil {
				t.Fatal(err)
			}
			if out["uid"].(float64) != 65532 || out["gid"].(float64) != 65532 {
				t.Errorf("ran as %v:%v, want 65532:65532", out["uid"], out["gid"])
			}
			if out["cwd"] != "/home/nonroot" || out["read:/config/greeting"] != "hello" || out["read:/etc/hosts"] != "127.0.0.1\tlocalhost\n" || out["proc"] != "" {
				t.Errorf("view of the container: %v", out)
			}
			if !strings.Contains(out["read:/etc/passwd"].(string), "nonroot:x:65532") {
				t.Errorf("/etc/passwd is not the image's: %q", out["read:/etc/passwd"])
			}
			for k, want := range tc.want {
				got, _ := out[k].(string)
				if (want == "") != (got == "") || !strings.Contains(got, want) {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestImageContainerFailures(t *testing.T) {
	requireRoot(t)
	s := testImage(t)
	nonroot := identity{uid: 65532, gid: 65532, home: "/home/nonroot"}
	t.Run("binary that needs libc", func(t *testing.T) {
		_, err := runCheck(t, s, nonroot, nil, false, "dynamic")
		if err == nil || !strings.Contains(err.Error(), "no such file or directory") {
			t.Fatalf("err = %v, want the exec failure of a missing loader", err)
		}
	})
	t.Run("binary not in the image", func(t *testing.T) {
		_, err := runCheck(t, s, nonroot, nil, false, "tcprepl")
		if err == nil || !strings.Contains(err.Error(), "not found in $PATH") {
			t.Fatalf("err = %v", err)
		}
		_, err = runCheck(t, s, nonroot, nil, false, "/usr/bin/check")
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("image not present", func(t *testing.T) {
		for _, ref := range []string{"example.com/check:v2", "example.com/other:v1", "check:v1"} {
			if _, err := s.lookup(ref); !errors.Is(err, errImagePull) {
				t.Errorf("lookup(%s) = %v, want errImagePull", ref, err)
			}
		}
		img, err := s.lookup(testImageRef)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.lookup("example.com/check@" + img.digest); err != nil || got != img {
			t.Errorf("lookup by digest: %v, %v", got, err)
		}
	})
}

func TestResolveIdentity(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for f, c := range map[string]string{
		"passwd": "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"group":  "root:x:0:\nnonroot:x:65532:\nstaff:x:50:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, "etc", f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]struct {
		imageUser string
		pod       *corev1.PodSecurityContext
		container *corev1.SecurityContext
		want      identity
		wantErr   string
	}{
		"image user":              {imageUser: "65532:65532", want: identity{uid: 65532, gid: 65532, home: "/home/nonroot"}},
		"image user by name":      {imageUser: "nonroot", want: identity{uid: 65532, gid: 65532, home: "/home/nonroot"}},
		"image user and group":    {imageUser: "nonroot:staff", want: identity{uid: 65532, gid: 50, home: "/home/nonroot"}},
		"no user is root":         {want: identity{uid: 0, gid: 0, home: "/root"}},
		"uid without an entry":    {imageUser: "1000", want: identity{uid: 1000, gid: 0, home: "/"}},
		"pod overrides image":     {imageUser: "65532:65532", pod: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](2000), FSGroup: ptr.To[int64](3000), SupplementalGroups: []int64{4000}}, want: identity{uid: 1000, gid: 2000, groups: []uint32{3000, 4000}, home: "/"}},
		"container overrides pod": {pod: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000)}, container: &corev1.SecurityContext{RunAsUser: ptr.To[int64](65532)}, want: identity{uid: 65532, gid: 65532, home: "/home/nonroot"}},
		"runAsNonRoot with root":  {pod: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}, wantErr: "will run as root"},
		"runAsNonRoot, named":     {imageUser: "nonroot", container: &corev1.SecurityContext{RunAsNonRoot: ptr.To(true)}, wantErr: "non-numeric user"},
		"unknown user name":       {imageUser: "nobody", wantErr: "unable to find user nobody"},
		"unknown group name":      {imageUser: "65532:wheel", wantErr: "unable to find group wheel"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: tc.pod}}
			c := &corev1.Container{Name: "c", SecurityContext: tc.container}
			got, err := resolveIdentity(pod, c, tc.imageUser, root)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.uid != tc.want.uid || got.gid != tc.want.gid || got.home != tc.want.home || len(got.groups) != len(tc.want.groups) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got.groups {
				if got.groups[i] != tc.want.groups[i] {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
			}
		})
	}
}

func TestNormalizeRef(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                           "docker.io/library/busybox:latest",
		"org/app:1":                         "docker.io/org/app:1",
		"ghcr.io/tcprepl/tcprepl:0.1.0":     "ghcr.io/tcprepl/tcprepl:0.1.0",
		"localhost:5000/app":                "localhost:5000/app:latest",
		"localhost/app:2":                   "localhost/app:2",
		"ghcr.io/tcprepl/tcprepl@sha256:ab": "ghcr.io/tcprepl/tcprepl@sha256:ab",
	} {
		if got := normalizeRef(in); got != want {
			t.Errorf("normalizeRef(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestImageCommandLine(t *testing.T) {
	cfg := ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"default"}}
	vars := map[string]string{"X": "x"}
	tests := map[string]struct {
		c    corev1.Container
		cfg  ImageConfig
		want []string
	}{
		"entrypoint and cmd":         {cfg: cfg, want: []string{"/ep", "default"}},
		"args replace cmd":           {c: corev1.Container{Args: []string{"a", "$(X)"}}, cfg: cfg, want: []string{"/ep", "a", "x"}},
		"command replaces both":      {c: corev1.Container{Command: []string{"tcprepl"}, Args: []string{"master"}}, cfg: cfg, want: []string{"tcprepl", "master"}},
		"command without args":       {c: corev1.Container{Command: []string{"tcprepl"}}, cfg: cfg, want: []string{"tcprepl"}},
		"nothing to run is an error": {cfg: ImageConfig{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := imageCommandLine(&tc.c, tc.cfg, vars)
			if tc.want == nil {
				if !errors.Is(err, errConfig) {
					t.Fatalf("err = %v, want errConfig", err)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestNamespaceThreadReturnsToHost: the thread that forks a container goes
// back to the host's mount namespace and stays alive, because its ending
// would send the parent-death signal to every process it ever forked (the
// API server, other pods).
func TestNamespaceThreadReturnsToHost(t *testing.T) {
	requireRoot(t)
	hostNS, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	var tid int
	var inside string
	err = inNamespace(func() error {
		return unix.Unshare(unix.CLONE_NEWNS)
	}, func() error {
		tid = unix.Gettid()
		inside, err = os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/mnt", tid))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside == hostNS {
		t.Fatalf("the thread was still in the host's namespace %s while starting", inside)
	}
	after, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/mnt", tid))
	if err != nil {
		t.Fatalf("the thread %d is gone (its children would have been killed): %v", tid, err)
	}
	if after != hostNS {
		t.Errorf("thread %d is in mount namespace %s after the start, want the host's %s", tid, after, hostNS)
	}
	cwd, _ := os.Getwd()
	if got, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/cwd", tid)); err != nil || got != cwd {
		t.Errorf("thread %d works in %q (%v), want the process's %s", tid, got, err, cwd)
	}
}
