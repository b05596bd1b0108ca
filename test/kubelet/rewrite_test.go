package kubelet

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeResolve knows Service "master" in "prod" (ClusterIP, proxied at
// 127.9.255.2) and headless "master-hl" in "prod" with pod "master-0".
func fakeResolve(ns string, parts []string, fqdn bool) (string, bool, error) {
	switch strings.Join(parts, ".") {
	case "master.prod":
		return "127.9.255.2", true, nil
	case "master":
		if ns == "prod" {
			return "127.9.255.2", true, nil
		}
	case "master-0.master-hl.prod":
		return "127.9.0.7", true, nil
	case "down.prod":
		return "", false, fmt.Errorf("%w: no ready pod", errUnresolved)
	}
	if fqdn {
		return "", false, fmt.Errorf("%w: %v", errUnresolved, parts)
	}
	return "", false, nil
}

func TestRewrite(t *testing.T) {
	rw := newRewriter("127.9.0.3", "prod", []mount{
		{containerPath: "/etc/tcprepl", hostPath: "/k/pods/prod_w/volumes/config"},
		{containerPath: "/var/lib/tcprepl/", hostPath: "/k/claims/prod/data-w"},
		{containerPath: "/var/lib/tcprepl/keys", hostPath: "/k/pods/prod_w/volumes/keys"},
	}, fakeResolve)
	tests := []struct{ in, want string }{
		// Listen addresses bind the pod's own IP.
		{":8080", "127.9.0.3:8080"},
		{"--http-listen=:8080", "--http-listen=127.9.0.3:8080"},
		{"--listen=0.0.0.0:9092", "--listen=127.9.0.3:9092"},
		{"--listen=[::]:9092", "--listen=127.9.0.3:9092"},
		{"http://localhost:8080/healthz", "http://127.9.0.3:8080/healthz"},
		{"127.0.0.1:9000", "127.9.0.3:9000"},
		{`listen: ":9092"`, `listen: "127.9.0.3:9092"`},
		// Not addresses: left alone.
		{"12:30", "12:30"},
		{"port: 9092", "port: 9092"},
		{"localhost", "localhost"},
		{"a:b", "a:b"},
		{"10.1.2.3:80", "10.1.2.3:80"},
		// Service names.
		{"master.prod.svc.cluster.local:9092", "127.9.255.2:9092"},
		{"master.prod.svc:9092", "127.9.255.2:9092"},
		{"MASTER=master.prod.svc.cluster.local.:9092", "MASTER=127.9.255.2:9092"},
		{"--master=master:9092", "--master=127.9.255.2:9092"},
		{"http://master.prod/v1", "http://127.9.255.2/v1"},
		{"master-0.master-hl.prod.svc.cluster.local:9092", "127.9.0.7:9092"},
		{"tcp://user@master:1", "tcp://user@127.9.255.2:1"},
		// A bare word that happens to be a Service name, without a port or
		// URL around it, is not an address.
		{"master", "master"},
		{"other.ns:80", "other.ns:80"},
		// Mount paths: longest mount wins; prefixes must end at a boundary.
		{"--config=/etc/tcprepl/config.yaml", "--config=/k/pods/prod_w/volumes/config/config.yaml"},
		{"/etc/tcprepl", "/k/pods/prod_w/volumes/config"},
		{"/etc/tcprepl2/x", "/etc/tcprepl2/x"},
		{"/srv/etc/tcprepl", "/srv/etc/tcprepl"},
		{"--data-dir=/var/lib/tcprepl", "--data-dir=/k/claims/prod/data-w"},
		{"/var/lib/tcprepl/keys/a.pem", "/k/pods/prod_w/volumes/keys/a.pem"},
		{"dirs=/var/lib/tcprepl,/etc/tcprepl", "dirs=/k/claims/prod/data-w,/k/pods/prod_w/volumes/config"},
	}
	for _, tt := range tests {
		got, err := rw.rewrite(tt.in)
		if err != nil {
			t.Errorf("rewrite(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("rewrite(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRewriteUnresolved(t *testing.T) {
	rw := newRewriter("127.9.0.3", "prod", nil, fakeResolve)
	for _, in := range []string{
		"nosuch.prod.svc.cluster.local:9092",
		"down.prod.svc:1",
		"a.b.c.d.svc.cluster.local",
		"prod.svc",
	} {
		if _, err := rw.rewrite(in); !errors.Is(err, errUnresolved) {
			t.Errorf("rewrite(%q): err = %v, want errUnresolved", in, err)
		}
	}
}

func TestRewriteLenient(t *testing.T) {
	rw := newRewriter("127.9.0.3", "prod", nil, fakeResolve)
	rw.lenient = true
	for _, in := range []string{"http:http://indexer.default.svc:8080/rows", "a.b.c.d.svc.cluster.local"} {
		got, err := rw.rewrite(in)
		if err != nil || got != in {
			t.Errorf("lenient rewrite(%q) = %q, %v; want it unchanged", in, got, err)
		}
	}
	got, err := rw.rewrite("master.prod.svc:1")
	if err != nil || got != "127.9.255.2:1" {
		t.Errorf("lenient rewrite of a resolvable name = %q, %v", got, err)
	}
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "x", "POD": "p-0"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for in, want := range map[string]string{
		"$(A)":            "x",
		"--name=$(POD)-1": "--name=p-0-1",
		"$(MISSING)":      "$(MISSING)",
		"$$(A)":           "$(A)",
		"cost $5":         "cost $5",
		"$(A":             "$(A",
		"$":               "$",
	} {
		if got := expandVars(in, lookup); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageName(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/tcprepl/tcprepl:v1":          "ghcr.io/tcprepl/tcprepl",
		"localhost:5000/tcprepl":              "localhost:5000/tcprepl",
		"localhost:5000/tcprepl:dev":          "localhost:5000/tcprepl",
		"tcprepl@sha256:abc":                  "tcprepl",
		"ghcr.io/tcprepl/tcprepl:v1@sha256:0": "ghcr.io/tcprepl/tcprepl",
	} {
		if got := imageName(in); got != want {
			t.Errorf("imageName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIPAllocatorSticky(t *testing.T) {
	a, err := newIPAllocator(0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.release()
	ip1, _ := a.podIP("ns/a")
	ip2, _ := a.podIP("ns/b")
	again, _ := a.podIP("ns/a")
	svc, _ := a.serviceIP("ns/a")
	if ip1 == ip2 || ip1 != again || svc == ip1 {
		t.Fatalf("addresses: a=%s b=%s a-again=%s svc=%s", ip1, ip2, again, svc)
	}
	prefix := fmt.Sprintf("127.%d.", a.subnet)
	if !strings.HasPrefix(ip1, prefix) || !strings.HasPrefix(svc, prefix) {
		t.Fatalf("addresses %s/%s outside %s0.0/16", ip1, svc, prefix)
	}
	// A second allocator must not get the same subnet while this one holds it.
	if _, err := newIPAllocator(a.subnet); !errors.Is(err, errSubnetTaken) {
		t.Fatalf("claiming a held subnet: err = %v, want errSubnetTaken", err)
	}
}
