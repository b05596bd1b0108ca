package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Inputs are what varies between builds of one Spec. Equal inputs give an
// image with the same digest: every timestamp is Created, entries are
// sorted, owners and modes are fixed, and nothing is read from the clock or
// the build machine's file metadata.
type Inputs struct {
	Binary   []byte
	CABundle []byte
	// Arch is the GOARCH the binary was built for (amd64, arm64).
	Arch string
	// Created is the image's creation time and every file's mtime; the
	// Makefile passes the commit's time.
	Created  time.Time
	Version  string
	Revision string
}

// Label keys the builder sets from Inputs.
const (
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelCreated  = "org.opencontainers.image.created"
)

var errNotStatic = errors.New("binary is not statically linked")

var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386,
	"arm": elf.EM_ARM, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
}

// checkBinary refuses a binary the image could not run: not a Linux ELF
// executable for arch, or one that needs a dynamic loader (the image has no
// libc).
func checkBinary(bin []byte, arch string) error {
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("unsupported architecture %q (supported: amd64, arm64, 386, arm, ppc64le, s390x, riscv64)", arch)
	}
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("binary is not an ELF executable (build it with GOOS=linux): %w", err)
	}
	defer func() { _ = f.Close() }()
	if f.Machine != want {
		return fmt.Errorf("binary is for %s, not %s: build it with GOARCH=%s", f.Machine, arch, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: it asks for a dynamic loader, and the image has no libc; build it with CGO_ENABLED=0", errNotStatic)
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		return fmt.Errorf("%w: it needs %s, which the image does not have; build it with CGO_ENABLED=0", errNotStatic, strings.Join(libs, ", "))
	}
	return nil
}

// Build assembles the image: a base layer with what distroless/static's
// nonroot variant provides that tcprepl needs (passwd, group, the CA
// bundle, /tmp, the home directory), then a layer with the binary, so that
// the base layer is shared between releases.
func Build(spec Spec, in Inputs) (v1.Image, error) {
	if err := checkBinary(in.Binary, in.Arch); err != nil {
		return nil, err
	}
	if len(in.CABundle) == 0 {
		return nil, errors.New("the CA bundle is empty: install Debian's ca-certificates package (apt-get install ca-certificates) or pass --ca-bundle")
	}
	uid, gid, err := parseUser(spec.User)
	if err != nil {
		return nil, err
	}
	if in.Created.IsZero() {
		in.Created = time.Unix(0, 0)
	}
	created := in.Created.UTC().Truncate(time.Second)

	base := []entry{
		{name: "etc/passwd", mode: 0o644, data: passwd(spec, uid, gid)},
		{name: "etc/group", mode: 0o644, data: group(spec, gid)},
		{name: strings.TrimPrefix(spec.CABundlePath, "/"), mode: 0o644, data: in.CABundle},
		{name: "root", dir: true, mode: 0o700},
		{name: "tmp", dir: true, mode: 0o1777},
		{name: strings.TrimPrefix(spec.HomeDir, "/"), dir: true, mode: 0o700, uid: uid, gid: gid},
	}
	app := []entry{
		{name: strings.TrimPrefix(spec.BinaryPath, "/"), mode: 0o755, data: in.Binary},
	}
	baseLayer, err := layer(base, created)
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	appLayer, err := layer(app, created)
	if err != nil {
		return nil, fmt.Errorf("binary layer: %w", err)
	}

	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[LabelCreated] = created.Format(time.RFC3339)
	if in.Version != "" {
		labels[LabelVersion] = in.Version
	}
	if in.Revision != "" {
		labels[LabelRevision] = in.Revision
	}
	ports := map[string]struct{}{}
	for _, p := range spec.ExposedPorts {
		ports[p] = struct{}{}
	}
	cfg := &v1.ConfigFile{
		Architecture: in.Arch,
		OS:           "linux",
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			User:         spec.User,
			Entrypoint:   spec.Entrypoint,
			WorkingDir:   spec.WorkingDir,
			Env:          spec.Env,
			ExposedPorts: ports,
			Labels:       labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set the image config: %w", err)
	}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: baseLayer, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "hack/image: passwd and group for " + spec.UserName + ", CA bundle, /tmp, " + spec.HomeDir,
			Comment: "what gcr.io/distroless/static-debian12:nonroot provides that tcprepl uses",
		}},
		mutate.Addendum{Layer: appLayer, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "hack/image: COPY tcprepl " + spec.BinaryPath,
		}},
	)
	if err != nil {
		return nil, fmt.Errorf("add layers: %w", err)
	}
	return img, nil
}

func parseUser(u string) (uid, gid int, err error) {
	us, gs, ok := strings.Cut(u, ":")
	if !ok {
		gs = us
	}
	uid, err1 := strconv.Atoi(us)
	gid, err2 := strconv.Atoi(gs)
	if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("user %q is not numeric uid:gid (Kubernetes can only check runAsNonRoot against a numeric user)", u)
	}
	return uid, gid, nil
}

// passwd and group are distroless's entries: root, nobody and the user.
func passwd(s Spec, uid, gid int) []byte {
	return fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n%s:x:%d:%d:%s:%s:/sbin/nologin\n",
		s.UserName, uid, gid, s.UserName, s.HomeDir)
}

func group(s Spec, gid int) []byte {
	return fmt.Appendf(nil, "root:x:0:\nnobody:x:65534:\n%s:x:%d:\n", s.UserName, gid)
}

// entry is one file or directory of a layer; owner root unless set.
type entry struct {
	name     string
	dir      bool
	mode     int64
	uid, gid int
	data     []byte
}

// layer writes entries, with every missing parent directory (0755, root),
// sorted by name, as a gzipped tar with fixed times and owners.
func layer(entries []entry, mtime time.Time) (v1.Layer, error) {
	byName := map[string]entry{}
	for _, e := range entries {
		e.name = path.Clean(e.name)
		if e.name == "." || strings.HasPrefix(e.name, "../") || path.IsAbs(e.name) {
			return nil, fmt.Errorf("bad path %q in layer", e.name)
		}
		if _, dup := byName[e.name]; dup {
			return nil, fmt.Errorf("path %q twice in one layer", e.name)
		}
		byName[e.name] = e
	}
	for _, e := range entries {
		for d := path.Dir(path.Clean(e.name)); d != "."; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = entry{name: d, dir: true, mode: 0o755}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, n := range names {
		e := byName[n]
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: mtime,
		}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("write tar header %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	// Compressed here rather than by the library, so that the blob (and so
	// the manifest digest) depends only on this code and compress/gzip.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	blob := gz.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
