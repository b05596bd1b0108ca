package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// errConfig marks a container that cannot be started because of its spec or
// a missing ConfigMap/Secret (CreateContainerConfigError in a real kubelet).
var errConfig = errors.New("container config error")

// specBuilder turns a pod's spec into what a local process needs: files for
// its volumes, its environment, and its command line, with addresses and
// paths rewritten (see rewrite.go).
type specBuilder struct {
	client      kubernetes.Interface
	pod         *corev1.Pod
	podIP       string
	hostIP      string
	podDir      string
	pvcDir      string
	resolve     hostResolver
	commands    map[string]string
	entrypoints map[string][]string
	// imageMode: containers run from images in a root of their own, where
	// volumes are at their mountPaths (no path rewriting) and get a
	// kubelet's ownership and modes.
	imageMode bool
	// configMaps and secrets, when set, are read from the kubelet's
	// informer caches instead of the API: the periodic volume refresh
	// uses them so that it adds no requests (a container start reads
	// the API, so it never starts with an object older than the cache).
	configMaps corelisters.ConfigMapLister
	secrets    corelisters.SecretLister
}

// volumeDirs materialises every volume of the pod and returns volume name ->
// host directory. ConfigMap, Secret, projected and downward-API volumes are
// written again on every call (see atomic_writer.go), so a container
// restart sees current contents.
func (b *specBuilder) volumeDirs(ctx context.Context) (map[string]string, error) {
	dirs, _, err := b.writeVolumes(ctx, false)
	return dirs, err
}

// refreshable says whether a running pod's volume follows its source, as
// the kubelet's periodic sync does: ConfigMap, Secret and downward-API
// volumes, and projected volumes without a ServiceAccount token (the test
// kubelet requests tokens only at container start).
func refreshable(v corev1.Volume) bool {
	switch {
	case v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil:
		return true
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil {
				return false
			}
		}
		return true
	}
	return false
}

// writeVolumes materialises the pod's volumes; with refresh, only the
// refreshable ones that a container start already wrote, and it returns the
// names of those whose files changed.
func (b *specBuilder) writeVolumes(ctx context.Context, refresh bool) (map[string]string, []string, error) {
	dirs := map[string]string{}
	for _, v := range b.pod.Spec.Volumes {
		dirs[v.Name] = filepath.Join(b.podDir, "volumes", v.Name)
		if v.PersistentVolumeClaim != nil {
			// A claim's data outlives the pod: it is kept per namespace and
			// claim name for the kubelet's lifetime, like a bound volume.
			dirs[v.Name] = filepath.Join(b.pvcDir, b.pod.Namespace, v.PersistentVolumeClaim.ClaimName)
		}
	}
	// Paths in configuration files are rewritten with every container's
	// mounts (a config file names the data directory another volume holds).
	var mounts []mount
	for _, c := range append(append([]corev1.Container(nil), b.pod.Spec.InitContainers...), b.pod.Spec.Containers...) {
		ms, err := containerMounts(&c, dirs)
		if err != nil {
			return nil, nil, err
		}
		if !b.imageMode {
			mounts = append(mounts, ms...)
		}
	}
	rw := newRewriter(b.podIP, b.pod.Namespace, mounts, b.resolve)
	var changed []string
	for _, v := range b.pod.Spec.Volumes {
		dir := dirs[v.Name]
		if refresh {
			if !refreshable(v) {
				continue
			}
			if _, err := os.Lstat(filepath.Join(dir, dataLink)); err != nil {
				continue // no container has started with it yet
			}
		}
		var files map[string][]byte
		var err error
		switch {
		case v.EmptyDir != nil, v.PersistentVolumeClaim != nil, v.Ephemeral != nil:
		case v.ConfigMap != nil:
			files, err = b.configMapFiles(ctx, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional)
		case v.Secret != nil:
			files, err = b.secretFiles(ctx, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional)
		case v.DownwardAPI != nil:
			files, err = b.downwardFiles(v.DownwardAPI.Items)
		case v.Projected != nil:
			files, err = b.projectedFiles(ctx, v.Projected.Sources)
		default:
			return nil, nil, fmt.Errorf("%w: volume %q has a type the test kubelet does not support (supported: emptyDir, ephemeral, persistentVolumeClaim, configMap, secret, downwardAPI, projected)", errConfig, v.Name)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, fmt.Errorf("create volume dir %s: %w", dir, err)
		}
		updated := false
		if files != nil {
			if v.ConfigMap != nil || v.Secret != nil || v.Projected != nil {
				// Addresses in configuration files follow the same rules
				// as in args, so a config file's ":9092" binds the pod IP.
				for name, data := range files {
					s, err := rw.rewrite(string(data))
					if err != nil {
						return nil, nil, fmt.Errorf("volume %q file %q: %w", v.Name, name, err)
					}
					files[name] = []byte(s)
				}
			}
			// Files are replaced as a set: keys removed from the ConfigMap
			// disappear, as with the kubelet's atomic writer.
			if updated, err = writeAtomic(dir, files); err != nil {
				return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			if updated {
				changed = append(changed, v.Name)
			}
		}
		if b.imageMode && (!refresh || updated) {
			if err := b.ownVolume(v, dir, files != nil); err != nil {
				return nil, nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
		}
	}
	return dirs, changed, nil
}

// ownVolume sets a volume's ownership as a kubelet does: an emptyDir is
// world-writable (0777), a claim's directory keeps what it was created
// with (root, 0755, like a new file system), files from the API are root's
// and 0644; fsGroup then makes all of it group-owned and group-accessible.
func (b *specBuilder) ownVolume(v corev1.Volume, dir string, fromAPI bool) error {
	if v.EmptyDir != nil || v.Ephemeral != nil {
		if err := os.Chmod(dir, 0o777); err != nil {
			return err
		}
	}
	if sc := b.pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		return volumeOwnership(dir, *sc.FSGroup, fromAPI)
	}
	return nil
}

// containerMounts maps a container's volumeMounts to host paths.
func containerMounts(c *corev1.Container, dirs map[string]string) ([]mount, error) {
	var ms []mount
	for _, vm := range c.VolumeMounts {
		dir, ok := dirs[vm.Name]
		if !ok {
			return nil, fmt.Errorf("%w: container %q mounts volume %q, which the pod does not declare", errConfig, c.Name, vm.Name)
		}
		if vm.SubPath != "" {
			dir = filepath.Join(dir, filepath.FromSlash(path.Clean("/"+vm.SubPath)))
		}
		ms = append(ms, mount{containerPath: vm.MountPath, hostPath: dir})
	}
	return ms, nil
}

func selectItems(data map[string][]byte, items []corev1.KeyToPath, what string, optional bool) (map[string][]byte, error) {
	if len(items) == 0 {
		return data, nil
	}
	out := map[string][]byte{}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("%w: %s has no key %q", errConfig, what, it.Key)
		}
		out[it.Path] = d
	}
	return out, nil
}

func (b *specBuilder) configMapData(ctx context.Context, name string) (map[string][]byte, error) {
	var cm *corev1.ConfigMap
	var err error
	if b.configMaps != nil {
		cm, err = b.configMaps.ConfigMaps(b.pod.Namespace).Get(name)
	} else {
		cm, err = b.client.CoreV1().ConfigMaps(b.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: ConfigMap %s/%s not found", errConfig, b.pod.Namespace, name)
		}
		return nil, fmt.Errorf("get ConfigMap %s/%s: %w", b.pod.Namespace, name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data, nil
}

func (b *specBuilder) secretData(ctx context.Context, name string) (map[string][]byte, error) {
	var s *corev1.Secret
	var err error
	if b.secrets != nil {
		s, err = b.secrets.Secrets(b.pod.Namespace).Get(name)
	} else {
		s, err = b.client.CoreV1().Secrets(b.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: Secret %s/%s not found", errConfig, b.pod.Namespace, name)
		}
		return nil, fmt.Errorf("get Secret %s/%s: %w", b.pod.Namespace, name, err)
	}
	data := map[string][]byte{}
	for k, v := range s.Data {
		data[k] = v
	}
	for k, v := range s.StringData {
		data[k] = []byte(v)
	}
	return data, nil
}

func isOptional(p *bool) bool { return p != nil && *p }

func (b *specBuilder) configMapFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	data, err := b.configMapData(ctx, name)
	if err != nil {
		if errors.Is(err, errConfig) && isOptional(optional) {
			return map[string][]byte{}, nil
		}
		return nil, err
	}
	return selectItems(data, items, "ConfigMap "+name, isOptional(optional))
}

func (b *specBuilder) secretFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	data, err := b.secretData(ctx, name)
	if err != nil {
		if errors.Is(err, errConfig) && isOptional(optional) {
			return map[string][]byte{}, nil
		}
		return nil, err
	}
	return selectItems(data, items, "Secret "+name, isOptional(optional))
}

func (b *specBuilder) downwardFiles(items []corev1.DownwardAPIVolumeFile) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("%w: downwardAPI item %q: only fieldRef is supported", errConfig, it.Path)
		}
		v, err := b.fieldValue(it.FieldRef.FieldPath)
		if err != nil {
			return nil, err
		}
		out[it.Path] = []byte(v)
	}
	return out, nil
}

func (b *specBuilder) projectedFiles(ctx context.Context, sources []corev1.VolumeProjection) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, src := range sources {
		var files map[string][]byte
		var err error
		switch {
		case src.ConfigMap != nil:
			files, err = b.configMapFiles(ctx, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
		case src.Secret != nil:
			files, err = b.secretFiles(ctx, src.Secret.Name, src.Secret.Items, src.Secret.Optional)
		case src.DownwardAPI != nil:
			files, err = b.downwardFiles(src.DownwardAPI.Items)
		case src.ServiceAccountToken != nil:
			files, err = b.serviceAccountToken(ctx, src.ServiceAccountToken)
		default:
			return nil, fmt.Errorf("%w: projected volume source of an unsupported kind (supported: configMap, secret, downwardAPI, serviceAccountToken)", errConfig)
		}
		if err != nil {
			return nil, err
		}
		for k, v := range files {
			out[k] = v
		}
	}
	return out, nil
}

// serviceAccountToken requests a bound token for the pod's ServiceAccount,
// as the kubelet does for projected token volumes.
func (b *specBuilder) serviceAccountToken(ctx context.Context, src *corev1.ServiceAccountTokenProjection) (map[string][]byte, error) {
	sa := b.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: b.pod.Name, UID: b.pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	got, err := b.client.CoreV1().ServiceAccounts(b.pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request a token for ServiceAccount %s/%s: %w", b.pod.Namespace, sa, err)
	}
	return map[string][]byte{src.Path: []byte(got.Status.Token)}, nil
}

// fieldValue resolves a downward-API field path.
func (b *specBuilder) fieldValue(fp string) (string, error) {
	p := b.pod
	switch fp {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return b.podIP, nil
	case "status.hostIP", "status.hostIPs":
		return b.hostIP, nil
	case "metadata.labels", "metadata.annotations":
		m := p.Labels
		if fp == "metadata.annotations" {
			m = p.Annotations
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var sb strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&sb, "%s=%q\n", k, m[k])
		}
		return sb.String(), nil
	}
	for _, prefix := range []string{"metadata.labels['", "metadata.annotations['"} {
		if strings.HasPrefix(fp, prefix) && strings.HasSuffix(fp, "']") {
			k := strings.TrimSuffix(strings.TrimPrefix(fp, prefix), "']")
			if strings.HasPrefix(prefix, "metadata.labels") {
				return p.Labels[k], nil
			}
			return p.Annotations[k], nil
		}
	}
	return "", fmt.Errorf("%w: fieldRef %q is not supported by the test kubelet", errConfig, fp)
}

// hostEnv is what a host-mode process gets before its spec's environment:
// PATH, HOME (the pod dir), HOSTNAME, and TCPREPL_POD_IP/POD_IP with the
// pod's own address.
func (b *specBuilder) hostEnv() []envVar {
	return []envVar{
		{name: "PATH", value: os.Getenv("PATH")}, {name: "HOME", value: b.podDir}, {name: "HOSTNAME", value: b.pod.Name},
		{name: "POD_IP", value: b.podIP}, {name: "TCPREPL_POD_IP", value: b.podIP},
	}
}

// env builds the container's environment in Kubernetes order (the base:
// the image's and the kubelet's variables, then envFrom, then env, each
// able to refer to earlier ones with $(VAR)), before any rewriting.
func (b *specBuilder) env(ctx context.Context, c *corev1.Container, base []envVar) ([]envVar, map[string]string, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	kubeletVars := map[string]string{}
	for _, e := range base {
		kubeletVars[e.name] = e.value
		set(e.name, e.value)
	}
	for _, ef := range c.EnvFrom {
		var data map[string][]byte
		var err error
		switch {
		case ef.ConfigMapRef != nil:
			data, err = b.configMapData(ctx, ef.ConfigMapRef.Name)
			if err != nil && errors.Is(err, errConfig) && isOptional(ef.ConfigMapRef.Optional) {
				continue
			}
		case ef.SecretRef != nil:
			data, err = b.secretData(ctx, ef.SecretRef.Name)
			if err != nil && errors.Is(err, errConfig) && isOptional(ef.SecretRef.Optional) {
				continue
			}
		}
		if err != nil {
			return nil, nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(ef.Prefix+k, string(data[k]))
		}
	}
	lookup := func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, lookup))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.FieldRef != nil:
			v, err := b.fieldValue(vf.FieldRef.FieldPath)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			set(e.Name, v)
		case vf.ConfigMapKeyRef != nil:
			data, err := b.configMapData(ctx, vf.ConfigMapKeyRef.Name)
			if err != nil {
				if errors.Is(err, errConfig) && isOptional(vf.ConfigMapKeyRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			v, ok := data[vf.ConfigMapKeyRef.Key]
			if !ok {
				if isOptional(vf.ConfigMapKeyRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("%w: env %s: ConfigMap %s has no key %q", errConfig, e.Name, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
			}
			set(e.Name, string(v))
		case vf.SecretKeyRef != nil:
			data, err := b.secretData(ctx, vf.SecretKeyRef.Name)
			if err != nil {
				if errors.Is(err, errConfig) && isOptional(vf.SecretKeyRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			v, ok := data[vf.SecretKeyRef.Key]
			if !ok {
				if isOptional(vf.SecretKeyRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("%w: env %s: Secret %s has no key %q", errConfig, e.Name, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)
			}
			set(e.Name, string(v))
		case vf.ResourceFieldRef != nil:
			q, ok := c.Resources.Limits[corev1.ResourceName(strings.TrimPrefix(vf.ResourceFieldRef.Resource, "limits."))]
			if !ok {
				q, ok = c.Resources.Requests[corev1.ResourceName(strings.TrimPrefix(vf.ResourceFieldRef.Resource, "requests."))]
			}
			if ok {
				set(e.Name, q.String())
			} else {
				set(e.Name, "0")
			}
		default:
			return nil, nil, fmt.Errorf("%w: env %s has an unsupported valueFrom", errConfig, e.Name)
		}
	}
	out := make([]envVar, 0, len(order))
	for _, k := range order {
		kv, fromBase := kubeletVars[k]
		out = append(out, envVar{name: k, value: vals[k], fromKubelet: fromBase && kv == vals[k]})
	}
	return out, vals, nil
}

// envVar is one variable of a container's environment. fromKubelet marks
// the ones the kubelet set (and the spec did not change), which must not be
// rewritten: HOME is a host path that may well lie under a mountPath.
type envVar struct {
	name, value string
	fromKubelet bool
}

// imageName strips the tag and digest from an image reference.
func imageName(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// commandLine resolves the argv of a container: command (or the image's
// entrypoint from the configured table when the spec has none) plus args,
// with $(VAR) expanded, then the program looked up in the commands table
// (by full path, then base name) and finally in PATH.
func (b *specBuilder) commandLine(c *corev1.Container, vars map[string]string) ([]string, error) {
	argv := append([]string(nil), c.Command...)
	if len(argv) == 0 {
		ep, ok := b.entrypoints[imageName(c.Image)]
		if !ok {
			ep, ok = b.entrypoints["*"]
		}
		if !ok || len(ep) == 0 {
			return nil, fmt.Errorf("%w: container %q has no command and image %q has no known entrypoint; set the command or configure an entrypoint for the image", errConfig, c.Name, c.Image)
		}
		argv = append(argv, ep...)
	}
	argv = append(argv, c.Args...)
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for i := range argv {
		argv[i] = expandVars(argv[i], lookup)
	}
	prog, err := b.program(argv[0])
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", c.Name, err)
	}
	argv[0] = prog
	return argv, nil
}

func (b *specBuilder) program(name string) (string, error) {
	if p, ok := b.commands[name]; ok {
		return p, nil
	}
	if p, ok := b.commands[path.Base(name)]; ok {
		return p, nil
	}
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err == nil {
			return name, nil
		}
	}
	p, err := exec.LookPath(path.Base(name))
	if err != nil {
		return "", fmt.Errorf("%w: program %q is neither in the kubelet's command table nor in PATH", errConfig, name)
	}
	return p, nil
}
