package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var (
	staticOnce sync.Once
	staticBin  []byte
	staticErr  error
)

// staticBinary is a real static Linux/amd64 executable: a tiny Go program
// built with CGO_ENABLED=0, as `make image` builds tcprepl.
func staticBinary(t *testing.T) []byte {
	t.Helper()
	staticOnce.Do(func() {
		dir, err := os.MkdirTemp("", "image-test-")
		if err != nil {
			staticErr = err
			return
		}
		defer os.RemoveAll(dir)
		src := filepath.Join(dir, "main.go")
		if err := os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"hello\") }\n"), 0o644); err != nil {
			staticErr = err
			return
		}
		out := filepath.Join(dir, "hello")
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, src)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-buildvcs=false")
		if b, err := cmd.CombinedOutput(); err != nil {
			staticErr = errors.New(string(b))
			return
		}
		staticBin, staticErr = os.ReadFile(out)
	})
	if staticErr != nil {
		t.Fatalf("build a static test binary: %v", staticErr)
	}
	return staticBin
}

func testInputs(t *testing.T) Inputs {
	return Inputs{
		Binary: staticBinary(t), CABundle: []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"),
		Arch: "amd64", Created: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Version: "v0.1.0", Revision: "c960864",
	}
}

// TestBuildIsReproducible: building twice from the same inputs (one commit:
// one binary, one CA bundle, the commit's time) gives the same digest, the
// same OCI layout and the same tarball, byte for byte.
func TestBuildIsReproducible(t *testing.T) {
	tag, err := name.NewTag("ghcr.io/tcprepl/tcprepl:v0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	type output struct {
		digest  v1.Hash
		index   []byte
		tarHash [32]byte
	}
	build := func() output {
		img, err := Build(TCPREPL, testInputs(t))
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := WriteLayout(filepath.Join(dir, "oci"), tag, img); err != nil {
			t.Fatal(err)
		}
		index, err := os.ReadFile(filepath.Join(dir, "oci", "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteTarball(filepath.Join(dir, "image.tar"), tag, img); err != nil {
			t.Fatal(err)
		}
		tb, err := os.ReadFile(filepath.Join(dir, "image.tar"))
		if err != nil {
			t.Fatal(err)
		}
		return output{digest: d, index: index, tarHash: sha256.Sum256(tb)}
	}
	first := build()
	// The wall clock moves between the builds; nothing may depend on it.
	time.Sleep(1100 * time.Millisecond)
	second := build()
	if first.digest != second.digest {
		t.Errorf("digests differ: %s then %s", first.digest, second.digest)
	}
	if !bytes.Equal(first.index, second.index) {
		t.Errorf("OCI layout index.json differs:\n%s\n%s", first.index, second.index)
	}
	if first.tarHash != second.tarHash {
		t.Errorf("docker tarballs differ")
	}

	// And the digest does depend on the inputs.
	other := testInputs(t)
	other.Revision = "0000000"
	img, err := Build(TCPREPL, other)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d == first.digest {
		t.Errorf("a different revision gave the same digest %s", d)
	}
}

type tarEntry struct {
	name       string
	typ        byte
	mode       int64
	uid, gid   int
	uname      string
	mtime      time.Time
	content    string
	contentLen int
}

func layerEntries(t *testing.T, l v1.Layer) []tarEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []tarEntry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		e := tarEntry{name: h.Name, typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, uname: h.Uname, mtime: h.ModTime, contentLen: len(b)}
		if len(b) < 4096 {
			e.content = string(b)
		}
		out = append(out, e)
	}
}

// TestLayersAreNormalised: sorted entries with their parent directories,
// fixed owners and modes, every mtime the creation time.
func TestLayersAreNormalised(t *testing.T) {
	in := testInputs(t)
	img, err := Build(TCPREPL, in)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 {
		t.Fatalf("%d layers, want 2 (base files, binary)", len(layers))
	}
	want := [][]tarEntry{{
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/group", typ: tar.TypeReg, mode: 0o644, content: "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, content: "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		{name: "etc/ssl/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/ssl/certs/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", typ: tar.TypeReg, mode: 0o644, content: string(in.CABundle)},
		{name: "home/", typ: tar.TypeDir, mode: 0o755},
		{name: "home/nonroot/", typ: tar.TypeDir, mode: 0o700, uid: 65532, gid: 65532},
		{name: "root/", typ: tar.TypeDir, mode: 0o700},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
	}, {
		{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/local/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/local/bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/local/bin/tcprepl", typ: tar.TypeReg, mode: 0o755, contentLen: len(in.Binary)},
	}}
	for i, l := range layers {
		got := layerEntries(t, l)
		if len(got) != len(want[i]) {
			t.Fatalf("layer %d has %d entries, want %d: %+v", i, len(got), len(want[i]), got)
		}
		for j, w := range want[i] {
			g := got[j]
			if g.name != w.name || g.typ != w.typ || g.mode != w.mode || g.uid != w.uid || g.gid != w.gid || g.uname != "" {
				t.Errorf("layer %d entry %d = %s type %c mode %o owner %d:%d %q, want %s type %c mode %o owner %d:%d", i, j,
					g.name, g.typ, g.mode, g.uid, g.gid, g.uname, w.name, w.typ, w.mode, w.uid, w.gid)
			}
			if !g.mtime.Equal(in.Created) {
				t.Errorf("%s mtime %s, want the creation time %s", g.name, g.mtime, in.Created)
			}
			if w.content != "" && g.content != w.content {
				t.Errorf("%s content %q, want %q", g.name, g.content, w.content)
			}
			if w.contentLen != 0 && g.contentLen != w.contentLen {
				t.Errorf("%s has %d bytes, want %d", g.name, g.contentLen, w.contentLen)
			}
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Equal(in.Created) {
		t.Errorf("config os/arch/created = %s/%s/%s", cf.OS, cf.Architecture, cf.Created)
	}
	if cf.Config.Labels[LabelVersion] != "v0.1.0" || cf.Config.Labels[LabelRevision] != "c960864" || cf.Config.Labels[LabelCreated] != "2026-12-01T10:00:00Z" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	mf, err := img.MediaType()
	if err != nil || !strings.Contains(string(mf), "oci") {
		t.Errorf("manifest media type %s (%v), want OCI", mf, err)
	}
}

// TestOutputsAreLoadable reads the OCI layout and the tarball back the way
// crane push and docker load do, and finds the same image under its
// reference.
func TestOutputsAreLoadable(t *testing.T) {
	img, err := Build(TCPREPL, testInputs(t))
	if err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("registry.example:5000/team/tcprepl:v0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteLayout(filepath.Join(dir, "oci"), tag, img); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(filepath.Join(dir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != want ||
		im.Manifests[0].Annotations[AnnotationImageName] != tag.Name() || im.Manifests[0].Annotations[AnnotationRefName] != "v0.1.0" {
		t.Fatalf("layout index %+v, want one manifest %s named %s", im.Manifests, want, tag.Name())
	}
	// Writing again replaces the layout instead of adding a second image.
	if err := WriteLayout(filepath.Join(dir, "oci"), tag, img); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "oci", "index.json")); strings.Count(string(b), "sha256:") != 1 {
		t.Errorf("index after a second write: %s", b)
	}

	if err := WriteTarball(filepath.Join(dir, "image.tar"), tag, img); err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(filepath.Join(dir, "image.tar"), &tag)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := loaded.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if wd, _ := img.ConfigName(); ld != wd {
		t.Errorf("tarball holds config %s, want %s", ld, wd)
	}
}

func TestBuildRefusesWhatTheImageCannotRun(t *testing.T) {
	dynamic, err := os.ReadFile("/bin/true") // Debian's, linked against libc
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		change  func(*Inputs, *Spec)
		wantErr string
	}{
		"binary needs libc":        {change: func(in *Inputs, _ *Spec) { in.Binary = dynamic }, wantErr: "CGO_ENABLED=0"},
		"binary for another arch":  {change: func(in *Inputs, _ *Spec) { in.Arch = "arm64" }, wantErr: "GOARCH=arm64"},
		"not an executable":        {change: func(in *Inputs, _ *Spec) { in.Binary = []byte("#!/bin/sh\n") }, wantErr: "not an ELF"},
		"unknown arch":             {change: func(in *Inputs, _ *Spec) { in.Arch = "vax" }, wantErr: "unsupported architecture"},
		"no CA bundle":             {change: func(in *Inputs, _ *Spec) { in.CABundle = nil }, wantErr: "ca-certificates"},
		"user by name":             {change: func(_ *Inputs, s *Spec) { s.User = "nonroot" }, wantErr: "not numeric"},
		"binary path outside root": {change: func(_ *Inputs, s *Spec) { s.BinaryPath = "/../x" }, wantErr: "bad path"},
		"two files at one path":    {change: func(_ *Inputs, s *Spec) { s.CABundlePath = "/etc/passwd" }, wantErr: "twice"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in, spec := testInputs(t), TCPREPL
			tc.change(&in, &spec)
			_, err := Build(spec, in)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	if _, err := Build(TCPREPL, Inputs{Binary: dynamic, CABundle: []byte("x"), Arch: "amd64"}); !errors.Is(err, errNotStatic) {
		t.Errorf("a dynamic binary gave %v, want errNotStatic", err)
	}
}

func TestRunFlags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tcprepl")
	if err := os.WriteFile(bin, staticBinary(t), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		args    []string
		wantErr string
	}{
		"no binary":      {args: []string{"--tarball", "x.tar"}, wantErr: "--binary is required"},
		"no output":      {args: []string{"--binary", bin}, wantErr: "nothing to write"},
		"bad reference":  {args: []string{"--binary", bin, "--tarball", "x.tar", "--ref", "UPPER/case:tag"}, wantErr: "--ref"},
		"bad created":    {args: []string{"--binary", bin, "--tarball", "x.tar", "--created", "yesterday"}, wantErr: "--created"},
		"missing CA":     {args: []string{"--binary", bin, "--tarball", "x.tar", "--ca-bundle", "/nonexistent/ca.crt"}, wantErr: "ca-certificates"},
		"missing binary": {args: []string{"--binary", "/nonexistent/tcprepl", "--tarball", "x.tar"}, wantErr: "read the binary"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := run(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("writes both outputs", func(t *testing.T) {
		dir := t.TempDir()
		ca := filepath.Join(dir, "ca.crt")
		if err := os.WriteFile(ca, []byte("pem"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := run([]string{"--binary", bin, "--ca-bundle", ca, "--created", "2026-12-01T10:00:00Z", "--ref", "example.com/tcprepl:t",
			"--oci-layout", filepath.Join(dir, "oci"), "--tarball", filepath.Join(dir, "img.tar")}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"oci/index.json", "oci/oci-layout", "img.tar"} {
			if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
				t.Error(err)
			}
		}
	})
}
