package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDockerfileDescribesTheBuiltImage keeps the Dockerfile and the builder
// from drifting: what the Dockerfile's runtime stage sets (user,
// entrypoint, binary path, ports, labels) must be what Build puts in the
// image config.
func TestDockerfileDescribesTheBuiltImage(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df, err := ParseDockerfile(string(src))
	if err != nil {
		t.Fatal(err)
	}
	img, err := Build(TCPREPL, Inputs{Binary: staticBinary(t), CABundle: []byte("ca"), Arch: "amd64", Version: "v1", Revision: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if !strings.HasPrefix(df.From, "gcr.io/distroless/static") || !strings.HasSuffix(df.From, ":nonroot") {
		t.Errorf("Dockerfile runtime base is %s; the builder recreates distroless/static:nonroot (passwd, group, CA bundle, home); update hack/image with it", df.From)
	}
	if df.User != c.User {
		t.Errorf("USER: Dockerfile %q, image %q", df.User, c.User)
	}
	if !slices.Equal(df.Entrypoint, c.Entrypoint) {
		t.Errorf("ENTRYPOINT: Dockerfile %q, image %q", df.Entrypoint, c.Entrypoint)
	}
	if !slices.Equal(df.CopyDests, []string{TCPREPL.BinaryPath}) {
		t.Errorf("COPY destinations: Dockerfile %q, image has the binary at %q", df.CopyDests, TCPREPL.BinaryPath)
	}
	var ports []string
	for p := range c.ExposedPorts {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	dfPorts := slices.Sorted(slices.Values(df.Ports))
	if !slices.Equal(dfPorts, ports) {
		t.Errorf("EXPOSE: Dockerfile %q, image %q", dfPorts, ports)
	}
	// Labels whose value is a build argument are the ones the builder
	// fills in from its inputs.
	fromInputs := map[string]string{LabelVersion: "${VERSION}", LabelRevision: "${COMMIT}"}
	for k, v := range df.Labels {
		if want, ok := fromInputs[k]; ok {
			if v != want {
				t.Errorf("LABEL %s=%q in the Dockerfile; the builder sets it from its inputs, so the Dockerfile should say %q", k, v, want)
			}
			continue
		}
		if c.Labels[k] != v {
			t.Errorf("LABEL %s: Dockerfile %q, image %q", k, v, c.Labels[k])
		}
	}
	for k := range c.Labels {
		if _, ok := df.Labels[k]; !ok && k != LabelCreated {
			t.Errorf("the image has label %s, which the Dockerfile does not set", k)
		}
	}
}

func TestParseDockerfile(t *testing.T) {
	tests := map[string]struct {
		src     string
		want    Dockerfile
		wantErr string
	}{
		"last stage wins, continuations and comments": {
			src: "FROM golang AS build\nUSER 0\nCOPY . .\nFROM base:tag\n# comment\nLABEL a=\"x y\" \\\n  # inside\n  b=plain\nCOPY --from=build /out/x /bin/x\nUSER 1:2\nEXPOSE 80 53/udp\nENTRYPOINT [\"/bin/x\", \"run\"]\n",
			want: Dockerfile{From: "base:tag", User: "1:2", Entrypoint: []string{"/bin/x", "run"}, CopyDests: []string{"/bin/x"},
				Ports: []string{"80/tcp", "53/udp"}, Labels: map[string]string{"a": "x y", "b": "plain"}},
		},
		"shell-form entrypoint": {src: "FROM x\nENTRYPOINT /bin/x run\n", wantErr: "exec (JSON array) form"},
		"no FROM":               {src: "USER 1\n", wantErr: "no FROM"},
		"unterminated label":    {src: "FROM x\nLABEL a=\"open\n", wantErr: "unterminated quote"},
		"dangling continuation": {src: "FROM x\nLABEL a=b \\\n", wantErr: "continued line"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseDockerfile(tc.src)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.From != tc.want.From || got.User != tc.want.User || !slices.Equal(got.Entrypoint, tc.want.Entrypoint) ||
				!slices.Equal(got.CopyDests, tc.want.CopyDests) || !slices.Equal(got.Ports, tc.want.Ports) || len(got.Labels) != len(tc.want.Labels) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for k, v := range tc.want.Labels {
				if got.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, got.Labels[k], v)
				}
			}
		})
	}
}
