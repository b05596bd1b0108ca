package main

// Spec is what the image holds besides the binary and the CA bundle: the
// same user, entrypoint, paths, ports, environment and labels as the
// Dockerfile's runtime stage on gcr.io/distroless/static-debian12:nonroot.
// dockerfile_test.go parses the Dockerfile and fails when the two differ.
type Spec struct {
	// BinaryPath is where the binary goes; pods run "tcprepl" from PATH or
	// this path.
	BinaryPath string
	// CABundlePath is where the CA bundle goes (Debian's path, which Go's
	// crypto/x509 reads, and SSL_CERT_FILE names).
	CABundlePath string
	// User is "uid:gid"; passwd and group entries are written for it.
	User       string
	UserName   string
	HomeDir    string
	Entrypoint []string
	WorkingDir string
	// ExposedPorts are "port/proto".
	ExposedPorts []string
	Env          []string
	// Labels are the static OCI labels; the builder adds
	// org.opencontainers.image.version, .revision and .created.
	Labels map[string]string
}

// TCPREPL is the image `make image` builds.
var TCPREPL = Spec{
	BinaryPath:   "/usr/local/bin/tcprepl",
	CABundlePath: "/etc/ssl/certs/ca-certificates.crt",
	User:         "65532:65532",
	UserName:     "nonroot",
	HomeDir:      "/home/nonroot",
	Entrypoint:   []string{"/usr/local/bin/tcprepl"},
	WorkingDir:   "/home/nonroot",
	// Replication, master HTTP API, metrics (operator and worker), operator
	// health: the defaults of the CRDs and of `tcprepl operator`.
	ExposedPorts: []string{"9092/tcp", "9093/tcp", "8080/tcp", "8081/tcp"},
	Env: []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
	},
	Labels: map[string]string{
		"org.opencontainers.image.source":      "https://github.com/tcprepl/tcprepl",
		"org.opencontainers.image.description": "tcprepl: operator, master, worker and probe for Synapse-protocol replication",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	},
}
