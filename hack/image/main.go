// Command image builds tcprepl's OCI image without a container engine, with
// go-containerregistry: the static binary at /usr/local/bin/tcprepl, a CA
// bundle, passwd and group entries for the nonroot user 65532, and the
// user, entrypoint, ports and labels of the Dockerfile (which describes the
// same image for people who build with Docker). `make image` runs it:
//
//	go run . --binary bin/image/tcprepl-linux-amd64 --ref ghcr.io/tcprepl/tcprepl:dev \
//	  --oci-layout bin/image/oci --tarball bin/image/tcprepl.tar
//
// The OCI layout is what `crane push` and the test kubelet read; the
// tarball is what `docker load` and `kind load image-archive` read. One
// commit gives one digest: see Inputs.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Annotations on the image's entry in the OCI layout's index: containerd's
// full reference, and the OCI tag.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var (
		binary   = fs.String("binary", "", "the tcprepl binary, built with CGO_ENABLED=0 GOOS=linux (required)")
		caBundle = fs.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to install (Debian's ca-certificates package)")
		arch     = fs.String("arch", "amd64", "GOARCH of the binary")
		ref      = fs.String("ref", "ghcr.io/tcprepl/tcprepl:dev", "the image's reference (repository:tag), recorded in the layout and the tarball")
		created  = fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "creation time, as Unix seconds or RFC 3339 (default $SOURCE_DATE_EPOCH, else 1970-01-01)")
		version  = fs.String("version", "", "org.opencontainers.image.version label")
		revision = fs.String("revision", "", "org.opencontainers.image.revision label")
		ociDir   = fs.String("oci-layout", "", "write an OCI image layout to this directory (replaced)")
		tarPath  = fs.String("tarball", "", "write a docker-loadable tarball to this file")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *binary == "" {
		return fmt.Errorf("--binary is required")
	}
	if *ociDir == "" && *tarPath == "" {
		return fmt.Errorf("nothing to write: pass --oci-layout, --tarball or both")
	}
	tag, err := name.NewTag(*ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("--ref %q: %w (want repository:tag)", *ref, err)
	}
	createdAt, err := parseCreated(*created)
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(*binary)
	if err != nil {
		return fmt.Errorf("read the binary: %w", err)
	}
	ca, err := os.ReadFile(*caBundle)
	if err != nil {
		return fmt.Errorf("read the CA bundle: %w (install Debian's ca-certificates package or pass --ca-bundle)", err)
	}
	img, err := Build(TCPREPL, Inputs{Binary: bin, CABundle: ca, Arch: *arch, Created: createdAt, Version: *version, Revision: *revision})
	if err != nil {
		return fmt.Errorf("%s: %w", *binary, err)
	}
	if *ociDir != "" {
		if err := WriteLayout(*ociDir, tag, img); err != nil {
			return err
		}
	}
	if *tarPath != "" {
		if err := WriteTarball(*tarPath, tag, img); err != nil {
			return err
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	layers, size, err := compressedSize(img)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s (%d layers, %.1f MiB compressed)\n", tag.Name(), digest, layers, float64(size)/(1<<20))
	return nil
}

func parseCreated(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(secs, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--created %q: want Unix seconds or RFC 3339", s)
	}
	return t.UTC(), nil
}

// WriteLayout replaces dir with an OCI image layout holding img, annotated
// with its reference.
func WriteLayout(dir string, tag name.Tag, img v1.Image) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("create OCI layout %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		AnnotationImageName: tag.Name(),
		AnnotationRefName:   tag.TagStr(),
	})); err != nil {
		return fmt.Errorf("write the image into %s: %w", dir, err)
	}
	return nil
}

// WriteTarball writes img as `docker save` does, tagged tag.
func WriteTarball(file string, tag name.Tag, img v1.Image) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(file), err)
	}
	tmp := file + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write tarball %s: %w", file, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("write tarball %s: %w", file, err)
	}
	return nil
}

func compressedSize(img v1.Image) (layers int, size int64, err error) {
	ls, err := img.Layers()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range ls {
		s, err := l.Size()
		if err != nil {
			return 0, 0, err
		}
		size += s
	}
	return len(ls), size, nil
}
