package kubelet

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Images: with Options.ImageLayouts, the kubelet runs containers from OCI
// images as a container runtime would, rather than programs from the host:
//
//   - the images are the ones in the given OCI image layouts (what `make
//     image` writes), found by the reference their index annotates
//     (io.containerd.image.name or org.opencontainers.image.ref.name); a
//     pod whose image is not there waits with ErrImagePull, as a node that
//     cannot pull it would: the kubelet never pulls;
//   - each image's layers are unpacked once per kubelet (by manifest
//     digest) into a root file system, with the owners and modes of the
//     layer;
//   - each container start gets its own copy of that root (hard links, so
//     it costs no space), a mount namespace with the pod's volumes bind
//     mounted at their mountPaths, /proc, a minimal /dev, /etc/hosts and
//     /etc/hostname, and runs chrooted into it as the image's user or the
//     securityContext's runAsUser/runAsGroup/fsGroup, never as root unless
//     asked; readOnlyRootFilesystem makes the root read-only;
//   - the command is the image's entrypoint and cmd (or the container's
//     command and args, per Kubernetes' rules), looked up in the image's
//     PATH inside the root; the environment starts from the image's;
//   - volumes get a real kubelet's ownership: emptyDir is world-writable,
//     a PersistentVolumeClaim's directory belongs to root (0755) like a new
//     file system, and fsGroup makes every volume group-owned and
//     group-writable.
//
// So a binary missing from the image, a wrong path, a binary that needs
// libc, or a user who cannot write its data directory fails here as it
// would on a node.

// errImagePull marks a container whose image the kubelet does not have.
var errImagePull = errors.New("image not present")

// OCI image layout and image config, as far as the kubelet reads them.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ociIndex struct {
	Manifests []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	MediaType string          `json:"mediaType"`
	Config    ociDescriptor   `json:"config"`
	Layers    []ociDescriptor `json:"layers"`
}

// ImageConfig is the part of an image's config a runtime uses.
type ImageConfig struct {
	User       string   `json:"User,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type ociConfig struct {
	Config ImageConfig `json:"config"`
}

// image is one image of a layout.
type image struct {
	ref    string // normalised reference
	digest string // manifest digest
	layout string
	config ImageConfig
	layers []ociDescriptor
}

// imageStore holds the images of the configured layouts and their unpacked
// root file systems.
type imageStore struct {
	dir    string // <kubelet dir>/images
	byRef  map[string]*image
	mu     sync.Mutex
	rootfs map[string]string // manifest digest -> unpacked root
}

func newImageStore(dir string, layouts []string) (*imageStore, error) {
	s := &imageStore{dir: dir, byRef: map[string]*image{}, rootfs: map[string]string{}}
	for _, l := range layouts {
		if err := s.load(l); err != nil {
			return nil, fmt.Errorf("image layout %s: %w", l, err)
		}
	}
	if len(s.byRef) == 0 {
		return nil, fmt.Errorf("no named image in the layouts %v (build one with `make image`)", layouts)
	}
	return s, nil
}

func readJSON(p string, into any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("parse %s: %w", p, err)
	}
	return nil
}

func blobPath(layout, digest string) (string, error) {
	algo, hex, ok := strings.Cut(digest, ":")
	if !ok || algo == "" || hex == "" || strings.ContainsAny(digest, "/\\") {
		return "", fmt.Errorf("malformed digest %q", digest)
	}
	return filepath.Join(layout, "blobs", algo, hex), nil
}

func (s *imageStore) load(layout string) error {
	var idx ociIndex
	if err := readJSON(filepath.Join(layout, "index.json"), &idx); err != nil {
		return fmt.Errorf("read index (is it an OCI image layout? `make image` writes bin/image/oci): %w", err)
	}
	for _, d := range idx.Manifests {
		ref := d.Annotations["io.containerd.image.name"]
		if ref == "" {
			ref = d.Annotations["org.opencontainers.image.ref.name"]
		}
		if ref == "" {
			continue
		}
		mp, err := blobPath(layout, d.Digest)
		if err != nil {
			return err
		}
		var m ociManifest
		if err := readJSON(mp, &m); err != nil {
			return fmt.Errorf("manifest of %s: %w", ref, err)
		}
		if len(m.Layers) == 0 {
			return fmt.Errorf("manifest of %s: not a single-platform image manifest (no layers)", ref)
		}
		cp, err := blobPath(layout, m.Config.Digest)
		if err != nil {
			return err
		}
		var cfg ociConfig
		if err := readJSON(cp, &cfg); err != nil {
			return fmt.Errorf("config of %s: %w", ref, err)
		}
		img := &image{ref: normalizeRef(ref), digest: d.Digest, layout: layout, config: cfg.Config, layers: m.Layers}
		s.byRef[img.ref] = img
	}
	return nil
}

// normalizeRef spells a reference the way a container runtime compares
// them: docker.io/library/ for short names, :latest when there is neither
// tag nor digest.
func normalizeRef(ref string) string {
	name, digest, hasDigest := strings.Cut(ref, "@")
	first, _, hasSlash := strings.Cut(name, "/")
	if !hasSlash {
		name = "docker.io/library/" + name
	} else if !strings.ContainsAny(first, ".:") && first != "localhost" {
		name = "docker.io/" + name
	}
	if hasDigest {
		return name + "@" + digest
	}
	if i := strings.LastIndex(name, ":"); i < 0 || i < strings.LastIndex(name, "/") {
		name += ":latest"
	}
	return name
}

// lookup finds the image a container names: by repository and tag, or by
// repository and manifest digest.
func (s *imageStore) lookup(ref string) (*image, error) {
	n := normalizeRef(ref)
	if img, ok := s.byRef[n]; ok {
		return img, nil
	}
	if repo, digest, ok := strings.Cut(n, "@"); ok {
		for _, img := range s.byRef {
			if img.digest == digest && imageName(img.ref) == imageName(repo) {
				return img, nil
			}
		}
	}
	known := make([]string, 0, len(s.byRef))
	for r, img := range s.byRef {
		known = append(known, r+" ("+img.digest+")")
	}
	sort.Strings(known)
	return nil, fmt.Errorf("%w: %s is not in the test kubelet's images, which it never pulls (it has %s)", errImagePull, ref, strings.Join(known, ", "))
}

// root returns the image's unpacked root file system, unpacking it on first
// use.
func (s *imageStore) root(img *image) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.rootfs[img.digest]; ok {
		return r, nil
	}
	_, hex, _ := strings.Cut(img.digest, ":")
	dir := filepath.Join(s.dir, hex)
	root := filepath.Join(dir, "rootfs")
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", root, err)
	}
	for i, l := range img.layers {
		if err := unpackLayer(img.layout, l, root); err != nil {
			return "", fmt.Errorf("unpack layer %d (%s) of %s: %w", i, l.Digest, img.ref, err)
		}
	}
	s.rootfs[img.digest] = root
	return root, nil
}

// unpackLayer applies one layer to root: files, directories, symbolic and
// hard links with their modes and owners, and whiteouts.
func unpackLayer(layout string, l ociDescriptor, root string) error {
	p, err := blobPath(layout, l.Digest)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(l.MediaType, "+gzip") || strings.HasSuffix(l.MediaType, ".gzip"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("gunzip: %w", err)
		}
		defer func() { _ = zr.Close() }()
		r = zr
	case strings.HasSuffix(l.MediaType, ".tar") || strings.HasSuffix(l.MediaType, "tar"):
	default:
		return fmt.Errorf("layer media type %q is not supported (gzip or plain tar)", l.MediaType)
	}
	tr := tar.NewReader(r)
	type dirMeta struct {
		path string
		h    *tar.Header
	}
	var dirs []dirMeta
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		rel := path.Clean("/" + h.Name)
		if rel == "/" {
			continue
		}
		dst := filepath.Join(root, filepath.FromSlash(rel))
		base := path.Base(rel)
		if base == ".wh..wh..opq" {
			// Opaque whiteout: the directory hides what lower layers had.
			parent := filepath.Dir(dst)
			ents, _ := os.ReadDir(parent)
			for _, e := range ents {
				if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
					return err
				}
			}
			continue
		}
		if strings.HasPrefix(base, ".wh.") {
			if err := os.RemoveAll(filepath.Join(filepath.Dir(dst), strings.TrimPrefix(base, ".wh."))); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(h.Mode & 0o777)
		if h.Mode&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if h.Mode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if h.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if st, err := os.Lstat(dst); err != nil || !st.IsDir() {
				_ = os.RemoveAll(dst)
				if err := os.Mkdir(dst, 0o755); err != nil {
					return err
				}
			}
			// Modes and owners of directories are set at the end, so a
			// read-only directory can still be filled.
			dirs = append(dirs, dirMeta{dst, h})
			continue
		case tar.TypeReg:
			_ = os.RemoveAll(dst)
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return fmt.Errorf("write %s: %w", rel, err)
			}
			if err := out.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			_ = os.RemoveAll(dst)
			if err := os.Symlink(h.Linkname, dst); err != nil {
				return err
			}
			if err := os.Lchown(dst, h.Uid, h.Gid); err != nil {
				return err
			}
			continue
		case tar.TypeLink:
			target := filepath.Join(root, filepath.FromSlash(path.Clean("/"+h.Linkname)))
			_ = os.RemoveAll(dst)
			if err := os.Link(target, dst); err != nil {
				return err
			}
			continue
		default:
			// Device nodes and FIFOs have no place in this project's
			// images; a runtime would create them, here they are skipped.
			continue
		}
		if err := os.Chown(dst, h.Uid, h.Gid); err != nil {
			return err
		}
		if err := os.Chmod(dst, mode); err != nil {
			return err
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		mode := os.FileMode(d.h.Mode&0o777) | os.ModeDir
		if d.h.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		if d.h.Mode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if err := os.Chown(d.path, d.h.Uid, d.h.Gid); err != nil {
			return err
		}
		if err := os.Chmod(d.path, mode); err != nil {
			return err
		}
	}
	return nil
}

// cloneTree copies the directory tree src to dst, hard-linking files (the
// image's root is shared and never written to: containers that are not
// root cannot write the files, as they belong to root) and recreating
// directories and symbolic links with their owners and modes.
func cloneTree(src, dst string) error {
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		st := info.Sys().(*syscall.Stat_t)
		switch {
		case info.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			if err := os.Chown(target, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetgid|os.ModeSetuid))
		case info.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
			return os.Lchown(target, int(st.Uid), int(st.Gid))
		default:
			return os.Link(p, target)
		}
	})
}

// passwdEntry is one line of an image's /etc/passwd or /etc/group.
type passwdEntry struct {
	name string
	id   int
	gid  int // passwd only
	home string
}

func readIDFile(root, file string) []passwdEntry {
	b, err := os.ReadFile(filepath.Join(root, "etc", file))
	if err != nil {
		return nil
	}
	var out []passwdEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		id, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		e := passwdEntry{name: f[0], id: id}
		if file == "passwd" && len(f) >= 6 {
			e.gid, _ = strconv.Atoi(f[3])
			e.home = f[5]
		}
		out = append(out, e)
	}
	return out
}

// LayoutImage is a named image of an OCI image layout.
type LayoutImage struct {
	// Ref is the image's reference (repository:tag), as the kubelet
	// compares them (see normalizeRef).
	Ref string
	// Digest is the manifest's digest (sha256:...).
	Digest string
}

// LayoutImages returns the named images in an OCI image layout, sorted by
// reference, for wiring them into a chart (image.repository, image.tag).
func LayoutImages(layout string) ([]LayoutImage, error) {
	s := &imageStore{byRef: map[string]*image{}}
	if err := s.load(layout); err != nil {
		return nil, fmt.Errorf("image layout %s: %w", layout, err)
	}
	out := make([]LayoutImage, 0, len(s.byRef))
	for r, img := range s.byRef {
		out = append(out, LayoutImage{Ref: r, Digest: img.digest})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}
