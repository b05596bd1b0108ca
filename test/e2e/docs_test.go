package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tcprepl/tcprepl/test/cluster"
	"github.com/tcprepl/tcprepl/test/harness"
)

// The README's runnable blocks. A block the docs test runs is a ```sh
// fence right after a marker line
//
//	<!-- e2e: STEP [TEXT=$VAR ...] -->
//
// STEP names the block (docsRequiredSteps must all be there, so deleting a
// marker fails the test too). Each TEXT=$VAR says that TEXT in the block is
// an example value the test replaces by one it knows, the only liberty it
// takes with the block:
//
//	$IMAGE_REPOSITORY, $IMAGE_TAG   the image `make image` built (the one
//	                                the test kubelet has)
//	$SERVICE_IP(NS/NAME)            the address the test kubelet serves
//	                                Service NS/NAME on for this machine
//
// Blocks run in README order with bash -euo pipefail from the repository
// root, with kubectl and helm the built ones first on PATH, KUBECONFIG the
// test cluster's and HOME an empty directory: as a user types them.
const docsMarkerPrefix = "<!-- e2e:"

// docsRequiredSteps are the README steps the docs test must find.
var docsRequiredSteps = []string{"install", "publish", "plugin"}

// docsBlock is one runnable block of the README.
type docsBlock struct {
	Step string
	// Line is the marker's line number (1-based), for messages.
	Line int
	// Vars maps the block's example TEXT to the $VAR replacing it.
	Vars   map[string]string
	Script string
}

var docsMarker = regexp.MustCompile(`^<!-- e2e: ([a-z][a-z0-9-]*)((?: [^ ]+=\$[A-Z_]+(?:\([^)]*\))?)*) -->$`)

// parseDocsBlocks finds the marked blocks of a Markdown document. A marker
// that is malformed or not followed by a ```sh fence is an error: it
// would otherwise silently stop testing its block.
func parseDocsBlocks(doc string) ([]docsBlock, error) {
	lines := strings.Split(doc, "\n")
	var out []docsBlock
	seen := map[string]bool{}
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(line, docsMarkerPrefix) {
			continue
		}
		m := docsMarker.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d: malformed marker %q; want <!-- e2e: STEP [TEXT=$VAR ...] -->", i+1, line)
		}
		b := docsBlock{Step: m[1], Line: i + 1, Vars: map[string]string{}}
		if seen[b.Step] {
			return nil, fmt.Errorf("line %d: step %q is marked twice", i+1, b.Step)
		}
		seen[b.Step] = true
		for _, opt := range strings.Fields(m[2]) {
			text, v, _ := strings.Cut(opt, "=")
			b.Vars[text] = v
		}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "```sh" {
			return nil, fmt.Errorf("line %d: the marker of step %q is not followed by a ```sh fence", i+1, b.Step)
		}
		var script []string
		j := i + 2
		for ; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
			script = append(script, lines[j])
		}
		if j == len(lines) {
			return nil, fmt.Errorf("line %d: the block of step %q is not closed", i+1, b.Step)
		}
		b.Script = strings.Join(script, "\n") + "\n"
		for text := range b.Vars {
			if !strings.Contains(b.Script, text) {
				return nil, fmt.Errorf("line %d: step %q replaces %q, which its block does not contain", i+1, b.Step, text)
			}
		}
		out = append(out, b)
		i = j
	}
	return out, nil
}

// substitute replaces the block's example values by the test's, longest
// first so that one is not a part of another's replacement.
func (b docsBlock) substitute(resolve func(v string) (string, error)) (string, error) {
	texts := make([]string, 0, len(b.Vars))
	for t := range b.Vars {
		texts = append(texts, t)
	}
	sort.Slice(texts, func(i, j int) bool { return len(texts[i]) > len(texts[j]) })
	pairs := make([]string, 0, 2*len(texts))
	for _, t := range texts {
		val, err := resolve(b.Vars[t])
		if err != nil {
			return "", fmt.Errorf("README line %d, step %s: %w", b.Line, b.Step, err)
		}
		pairs = append(pairs, t, val)
	}
	return strings.NewReplacer(pairs...).Replace(b.Script), nil
}

var serviceVar = regexp.MustCompile(`^\$SERVICE_IP\(([a-z0-9-]+)/([a-z0-9-]+)\)$`)

// docsResolver resolves the README's $VARs on the test cluster.
func docsResolver(env *harness.Env) func(string) (string, error) {
	return func(v string) (string, error) {
		repo, tag, err := splitImage(env.Tools.Image)
		if err != nil {
			return "", err
		}
		switch v {
		case "$IMAGE_REPOSITORY":
			return repo, nil
		case "$IMAGE_TAG":
			return tag, nil
		}
		if m := serviceVar.FindStringSubmatch(v); m != nil {
			return env.Kubelet.ServiceIP(m[1], m[2])
		}
		return "", fmt.Errorf("unknown variable %s; the docs test knows $IMAGE_REPOSITORY, $IMAGE_TAG and $SERVICE_IP(NS/NAME)", v)
	}
}

func splitImage(ref string) (repo, tag string, err error) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || i < strings.LastIndex(ref, "/") {
		return "", "", fmt.Errorf("image %q has no tag", ref)
	}
	return ref[:i], ref[i+1:], nil
}

// notesCommand matches a command line of the chart's NOTES: indented, then
// kubectl or helm.
var notesCommand = regexp.MustCompile(`^\s+((?:kubectl|helm) .*)$`)

// notesRawURL is where the NOTES point a user without a clone for the
// samples; the test reads the same paths from the checkout under test.
const notesRawURL = "https://raw.githubusercontent.com/tcprepl/tcprepl/main/"

// notesCommands extracts the NOTES' commands, with the two rewrites the
// test makes: raw GitHub URLs of the repository become paths in the
// checkout under test, and <chart> the chart's directory. A command with
// another <placeholder> is an error: the test could not run it literally.
func notesCommands(notes, repoRoot string) ([]string, error) {
	var out []string
	for _, line := range strings.Split(notes, "\n") {
		m := notesCommand.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		cmd := strings.ReplaceAll(m[1], notesRawURL, repoRoot+"/")
		cmd = strings.ReplaceAll(cmd, "<chart>", filepath.Join(repoRoot, "charts", "tcprepl"))
		if strings.Contains(cmd, "://") {
			return nil, fmt.Errorf("NOTES command %q fetches a URL the test cannot reach; point it at the repository (%s)", m[1], notesRawURL)
		}
		if p := regexp.MustCompile(`<[^>]+>`).FindString(cmd); p != "" {
			return nil, fmt.Errorf("NOTES command %q has a placeholder %s the test cannot fill", m[1], p)
		}
		out = append(out, cmd)
	}
	return out, nil
}

// TestReadmeMarkedBlocks checks the markers without a cluster: every
// required step is there, well formed, with variables the test knows.
func TestReadmeMarkedBlocks(t *testing.T) {
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseDocsBlocks(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	var steps []string
	for _, b := range blocks {
		steps = append(steps, b.Step)
		for text, v := range b.Vars {
			if v != "$IMAGE_REPOSITORY" && v != "$IMAGE_TAG" && !serviceVar.MatchString(v) {
				t.Errorf("README line %d: %s=%s: unknown variable", b.Line, text, v)
			}
		}
	}
	for _, want := range docsRequiredSteps {
		if !slices.Contains(steps, want) {
			t.Errorf("README.md has no block marked <!-- e2e: %s ... --> (found %v)", want, steps)
		}
	}
}

func TestParseDocsBlocks(t *testing.T) {
	tests := map[string]struct {
		doc     string
		want    []docsBlock
		wantErr string
	}{
		"two blocks and prose": {
			doc: "# t\n<!-- e2e: one a.b=$IMAGE_TAG -->\n```sh\necho a.b\n```\ntext\n```sh\nnot marked\n```\n<!-- e2e: two -->\n```sh\nls\nls -l\n```\n",
			want: []docsBlock{
				{Step: "one", Line: 2, Vars: map[string]string{"a.b": "$IMAGE_TAG"}, Script: "echo a.b\n"},
				{Step: "two", Line: 10, Vars: map[string]string{}, Script: "ls\nls -l\n"},
			},
		},
		"a service variable": {
			doc:  "<!-- e2e: pub s.default.svc=$SERVICE_IP(default/s) -->\n```sh\ncurl http://s.default.svc:1\n```\n",
			want: []docsBlock{{Step: "pub", Line: 1, Vars: map[string]string{"s.default.svc": "$SERVICE_IP(default/s)"}, Script: "curl http://s.default.svc:1\n"}},
		},
		"malformed":              {doc: "<!-- e2e:install -->\n```sh\nx\n```\n", wantErr: "malformed marker"},
		"not a variable":         {doc: "<!-- e2e: s a=b -->\n```sh\na\n```\n", wantErr: "malformed marker"},
		"no fence after":         {doc: "<!-- e2e: s -->\n\n```sh\nx\n```\n", wantErr: "not followed by a ```sh fence"},
		"another language":       {doc: "<!-- e2e: s -->\n```console\nx\n```\n", wantErr: "not followed by a ```sh fence"},
		"not closed":             {doc: "<!-- e2e: s -->\n```sh\nx\n", wantErr: "not closed"},
		"twice":                  {doc: "<!-- e2e: s -->\n```sh\nx\n```\n<!-- e2e: s -->\n```sh\ny\n```\n", wantErr: "marked twice"},
		"text not in the block":  {doc: "<!-- e2e: s nope=$IMAGE_TAG -->\n```sh\nx\n```\n", wantErr: `replaces "nope"`},
		"no marker, no blocks":   {doc: "```sh\nx\n```\n"},
		"a marker in the middle": {doc: "a\n  <!-- e2e: s -->\n```sh\nx\n```\n", want: []docsBlock{{Step: "s", Line: 2, Vars: map[string]string{}, Script: "x\n"}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseDocsBlocks(tc.doc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("blocks =\n %+v, want\n %+v", got, tc.want)
			}
		})
	}
}

func TestDocsSubstitute(t *testing.T) {
	b := docsBlock{Step: "install", Line: 3, Vars: map[string]string{"registry.example.com/tcprepl": "$IMAGE_REPOSITORY", "0.1.0": "$IMAGE_TAG"},
		Script: "helm install x --set image.repository=registry.example.com/tcprepl --set image.tag=0.1.0\n"}
	vals := map[string]string{"$IMAGE_REPOSITORY": "ghcr.io/tcprepl/tcprepl", "$IMAGE_TAG": "abc123"}
	got, err := b.substitute(func(v string) (string, error) {
		if s, ok := vals[v]; ok {
			return s, nil
		}
		return "", errors.New("unknown " + v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "helm install x --set image.repository=ghcr.io/tcprepl/tcprepl --set image.tag=abc123\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	b.Vars["x"] = "$NOPE"
	if _, err := b.substitute(func(v string) (string, error) {
		if s, ok := vals[v]; ok {
			return s, nil
		}
		return "", errors.New("unknown " + v)
	}); err == nil || !strings.Contains(err.Error(), "README line 3, step install: unknown $NOPE") {
		t.Errorf("err = %v", err)
	}
}

func TestNotesCommands(t *testing.T) {
	tests := map[string]struct {
		notes   string
		want    []string
		wantErr string
	}{
		"commands, URLs and <chart> rewritten": {
			notes: "Check:\n  kubectl -n x rollout status deployment/y\nApply:\n  kubectl apply -f " + notesRawURL + "config/samples/a.yaml\nprose kubectl get pods\n  kubectl apply --server-side -f <chart>/crds/\n",
			want:  []string{"kubectl -n x rollout status deployment/y", "kubectl apply -f /repo/config/samples/a.yaml", "kubectl apply --server-side -f /repo/charts/tcprepl/crds/"},
		},
		"another URL":         {notes: "  kubectl apply -f https://example.org/x.yaml\n", wantErr: "fetches a URL"},
		"another placeholder": {notes: "  kubectl get pods -n <namespace>\n", wantErr: "placeholder <namespace>"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := notesCommands(tc.notes, "/repo")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("commands =\n %q, want\n %q", got, tc.want)
			}
		})
	}
}

// docsShell runs a script the way a user's shell would: bash -euo
// pipefail from the repository root, the built kubectl and helm first on
// PATH as `kubectl` and `helm`, KUBECONFIG the test cluster's, HOME an
// empty directory (with Go's caches kept where they are, so `make` builds
// nothing twice).
type docsShell struct {
	env  []string
	dir  string
	logf func(string, ...any)
}

func newDocsShell(t *testing.T, ctx context.Context, env *harness.Env) *docsShell {
	t.Helper()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "tools")
	home := filepath.Join(tmp, "home")
	for _, d := range []string{bin, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"kubectl": env.Tools.Cluster.Kubectl, "helm": env.Tools.Helm} {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	goEnv, err := exec.CommandContext(ctx, "go", "env", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	vals := strings.Split(strings.TrimSpace(string(goEnv)), "\n")
	if len(vals) != 4 {
		t.Fatalf("go env printed %q", goEnv)
	}
	var e []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "HOME", "KUBECONFIG", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "GOCACHE", "GOMODCACHE", "GOPATH", "GOENV":
			continue
		}
		e = append(e, kv)
	}
	e = append(e,
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+home,
		"KUBECONFIG="+env.Cluster.Kubeconfig,
		"GOCACHE="+vals[0], "GOMODCACHE="+vals[1], "GOPATH="+vals[2], "GOENV="+vals[3],
		"HELM_CACHE_HOME="+filepath.Join(env.Dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(env.Dir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(env.Dir, "helm", "data"),
	)
	return &docsShell{env: e, dir: env.RepoRoot, logf: t.Logf}
}

// run runs script and returns its output (stdout and stderr interleaved,
// as a terminal shows them).
func (s *docsShell) run(ctx context.Context, timeout time.Duration, what, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Env, cmd.Dir = s.env, s.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	s.logf("%s (%s):\n$ %s\n%s", what, time.Since(start).Round(time.Millisecond), strings.ReplaceAll(strings.TrimSpace(script), "\n", "\n$ "), out.String())
	if err != nil {
		return out.String(), fmt.Errorf("%s failed: %w\n%s", what, err, out.String())
	}
	return out.String(), nil
}

// TestDocsFollowedLiterally follows the README's install path and the
// chart's NOTES on a fresh cluster, command by command as a user types
// them (see the marker scheme above), so that a broken step fails here:
// the README's helm install (the chart's own operator Deployment then runs
// as a pod), `kubectl apply -k config/samples` and a wait until every
// sample is Ready, then every command the NOTES print, then the README's
// publish, then the kubectl plugin installed with `make install-plugin`
// and run through kubectl.
func TestDocsFollowedLiterally(t *testing.T) {
	// What the README's blocks call besides kubectl and helm.
	var missing []string
	for _, prog := range []string{"bash", "make", "go", "install", "curl", "base64"} {
		if _, err := exec.LookPath(prog); err != nil {
			missing = append(missing, prog)
		}
	}
	if len(missing) > 0 {
		cluster.SkipOrFail(t, fmt.Errorf("%w: %s, which the README's commands run", cluster.ErrBinaryNotFound, strings.Join(missing, ", ")))
	}
	env, ctx := setup(t)
	readme, err := os.ReadFile(filepath.Join(env.RepoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseDocsBlocks(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	var steps []string
	for _, b := range blocks {
		steps = append(steps, b.Step)
	}
	for _, want := range docsRequiredSteps {
		if !slices.Contains(steps, want) {
			t.Fatalf("README.md has no block marked <!-- e2e: %s ... --> (found %v)", want, steps)
		}
	}
	sh := newDocsShell(t, ctx, env)
	resolve := docsResolver(env)
	outputs := map[string]string{}
	for _, b := range blocks {
		script, err := b.substitute(resolve)
		if err != nil {
			t.Fatal(err)
		}
		out, err := sh.run(ctx, 6*time.Minute, fmt.Sprintf("README step %s (line %d)", b.Step, b.Line), script)
		if err != nil {
			t.Fatal(err)
		}
		outputs[b.Step] = out
		if b.Step != "install" {
			continue
		}
		// What helm printed after the install: the chart's NOTES, each
		// command run as printed.
		notes, err := env.Helm(ctx, "get", "notes", release, "--namespace", operatorNS)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := notesCommands(notes, env.RepoRoot)
		if err != nil {
			t.Fatalf("the chart's NOTES: %v\n%s", err, notes)
		}
		for _, want := range []string{"rollout status", "kubectl apply -f", "kubectl get rmaster,rworker"} {
			if !slices.ContainsFunc(cmds, func(c string) bool { return strings.Contains(c, want) }) {
				t.Errorf("the NOTES have no %q command: %q", want, cmds)
			}
		}
		for _, c := range cmds {
			if _, err := sh.run(ctx, 3*time.Minute, "NOTES command", c); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The steps' outputs show what they claim: the samples Ready, a
	// published token, the plugin's view of the master it probed live.
	for step, wants := range map[string][]string{
		"install": {"replicationmaster.replication.tcprepl.io/synapse condition met", "replicationworker.replication.tcprepl.io/synapse-events condition met"},
		"publish": {`{"token":`},
		"plugin":  {"ReplicationMaster default/synapse", "ReplicationWorker default/synapse-all", "Status: reachable"},
	} {
		for _, w := range wants {
			if !strings.Contains(squashSpaces(outputs[step]), w) {
				t.Errorf("README step %s: its output lacks %q", step, w)
			}
		}
	}
}
