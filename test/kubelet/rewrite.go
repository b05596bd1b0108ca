package kubelet

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Rewriting is how a pod's processes, which all share the host's network
// and file system, are made to behave as if each pod had its own:
//
//   - Listen addresses. A bare ":PORT", "0.0.0.0:PORT", "[::]:PORT",
//     "localhost:PORT" or "127.0.0.1:PORT" becomes "<podIP>:PORT", so that
//     two pods can both listen on :8080 and "localhost" means the pod itself.
//   - Service names. "svc.ns.svc.cluster.local", "svc.ns.svc" and, when
//     followed by ":PORT" or used as a URL host, "svc.ns" and "svc" become
//     the Service's proxy address (ClusterIP Services) or a ready pod's IP
//     (headless Services; "pod.svc.ns.svc.cluster.local" names that pod).
//   - Mount paths. A volume's mountPath (and anything under it) becomes the
//     directory the kubelet materialised the volume in.
//
// The rules apply to command, args, env values, probe hosts and the contents
// of ConfigMap and Secret files: the places a pod's addresses come from.

// errUnresolved marks a cluster-DNS name that names no Service (yet), or a
// headless Service with no ready pod. The container start is retried, as a
// process would fail to resolve the name until the Service exists.
var errUnresolved = errors.New("unresolved service name")

// hostResolver maps a Service name to an address. ns is the pod's
// namespace; parts are the dot-separated labels of the name without the
// "svc[.cluster.local]" suffix; fqdn says whether that suffix was present.
// It returns ok=false when the name is not a Service (only possible when
// fqdn is false).
type hostResolver func(ns string, parts []string, fqdn bool) (addr string, ok bool, err error)

type mount struct {
	containerPath string
	hostPath      string
}

type rewriter struct {
	podIP     string
	namespace string
	mounts    []mount // longest containerPath first
	resolve   hostResolver
	// lenient leaves names that do not resolve as they are (the process
	// then fails to resolve them itself, as it would in a cluster where the
	// Service does not exist).
	lenient bool
}

func newRewriter(podIP, namespace string, mounts []mount, resolve hostResolver) *rewriter {
	ms := append([]mount(nil), mounts...)
	sort.SliceStable(ms, func(i, j int) bool { return len(ms[i].containerPath) > len(ms[j].containerPath) })
	return &rewriter{podIP: podIP, namespace: namespace, mounts: ms, resolve: resolve}
}

// rewrite applies the address and mount-path rules to one string.
func (r *rewriter) rewrite(s string) (string, error) {
	s, err := r.rewriteHosts(s)
	if err != nil {
		return "", err
	}
	return r.rewriteMounts(s), nil
}

func isHostChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isBoundary says whether c may precede a bare ":PORT" listen address:
// start of a flag value, a quoted string, or a list.
func isBoundary(c byte) bool {
	switch c {
	case '=', ' ', '\t', '\n', '"', '\'', ',', '[', '(':
		return true
	}
	return false
}

func (r *rewriter) rewriteHosts(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if !isHostChar(c) {
			atBoundary := i == 0 || isBoundary(s[i-1])
			switch {
			case atBoundary && strings.HasPrefix(s[i:], "[::]:") && i+5 < len(s) && isDigit(s[i+5]):
				b.WriteString(r.podIP)
				i += 4 // the ":PORT" is copied next
				continue
			case atBoundary && c == ':' && i+1 < len(s) && isDigit(s[i+1]):
				b.WriteString(r.podIP)
			}
			b.WriteByte(c)
			i++
			continue
		}
		j := i
		for j < len(s) && isHostChar(s[j]) {
			j++
		}
		tok := s[i:j]
		hasPort := j+1 < len(s) && s[j] == ':' && isDigit(s[j+1])
		urlHost := (i >= 2 && s[i-2:i] == "//") || (i >= 1 && s[i-1] == '@')
		repl, err := r.host(tok, hasPort, urlHost)
		if err != nil {
			return "", err
		}
		b.WriteString(repl)
		i = j
	}
	return b.String(), nil
}

// host rewrites one host-like token.
func (r *rewriter) host(tok string, hasPort, urlHost bool) (string, error) {
	if hasPort || urlHost {
		switch tok {
		case "localhost", "127.0.0.1", "0.0.0.0":
			return r.podIP, nil
		}
	}
	name := strings.TrimSuffix(strings.ToLower(tok), ".")
	var parts []string
	fqdn := false
	switch {
	case strings.HasSuffix(name, ".svc.cluster.local"):
		parts, fqdn = strings.Split(strings.TrimSuffix(name, ".svc.cluster.local"), "."), true
	case strings.HasSuffix(name, ".svc"):
		parts, fqdn = strings.Split(strings.TrimSuffix(name, ".svc"), "."), true
	case hasPort || urlHost:
		parts = strings.Split(name, ".")
		if len(parts) > 2 || isNumeric(parts) {
			return tok, nil
		}
	default:
		return tok, nil
	}
	if fqdn && (len(parts) < 2 || len(parts) > 3) {
		if r.lenient {
			return tok, nil
		}
		return "", fmt.Errorf("%w: %q is not <service>.<namespace>.svc[.cluster.local] or <pod>.<service>.<namespace>.svc[.cluster.local]", errUnresolved, tok)
	}
	addr, ok, err := r.resolve(r.namespace, parts, fqdn)
	if err != nil {
		if r.lenient && errors.Is(err, errUnresolved) {
			return tok, nil
		}
		return "", err
	}
	if !ok {
		return tok, nil
	}
	return addr, nil
}

func isNumeric(parts []string) bool {
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			if !isDigit(p[i]) {
				return false
			}
		}
	}
	return true
}

func isPathBoundary(c byte) bool {
	switch c {
	case '=', ' ', '\t', '\n', '"', '\'', ',', ':', '(', '[':
		return true
	}
	return false
}

// rewriteMounts replaces container paths under a volume's mountPath by the
// host directory. A match must start the string or follow a separator, and
// end the string or continue with "/" or a separator, so "/data" does not
// match inside "/database" or "/srv/data".
func (r *rewriter) rewriteMounts(s string) string {
	if len(r.mounts) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
outer:
	for i := 0; i < len(s); {
		if s[i] == '/' && (i == 0 || isPathBoundary(s[i-1])) {
			for _, m := range r.mounts {
				cp := strings.TrimSuffix(m.containerPath, "/")
				if cp == "" || !strings.HasPrefix(s[i:], cp) {
					continue
				}
				end := i + len(cp)
				if end < len(s) && s[end] != '/' && !isPathBoundary(s[end]) {
					continue
				}
				b.WriteString(m.hostPath)
				i = end
				continue outer
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// expandVars implements Kubernetes' $(VAR) expansion in command, args and
// env values: $(VAR) becomes the variable's value if it is defined and is
// left as written otherwise; $$ escapes a dollar.
func expandVars(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
