// Package version holds build information stamped in by the linker.
package version

// Version is the release version; `make build` sets it with -ldflags.
var Version = "dev"

// Commit is the git commit the binary was built from, when known.
var Commit = "unknown"
