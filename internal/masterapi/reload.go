package masterapi

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Every setting of Config is either applied by a running master when its
// config file changes (live) or read only at start (restart). The operator
// hashes only the restart settings into the pod template, so a change to a
// live one updates the ConfigMap without rolling the pod; the master
// re-reads the file and applies it (cmd/tcprepl/master_reload.go).

// Class says when a changed setting takes effect.
type Class int

const (
	// Restart settings are read only when the master starts.
	Restart Class = iota + 1
	// Live settings are applied by a running master on reload.
	Live
)

func (c Class) String() string {
	switch c {
	case Live:
		return "live"
	case Restart:
		return "restart"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// settingClasses classifies every setting by its path of JSON names. An
// entry covers the setting and everything under it, so "log" and "tls"
// class settings added to those sections later as restart; a new top-level
// setting or a new limit has no class until it is given one here, which
// TestEverySettingHasAClass catches.
var settingClasses = map[string]Class{
	// What the master listens on, announces and stores where: the sockets,
	// the log and the stream catalogue are built once.
	"serverName":           Restart,
	"replicationListen":    Restart,
	"httpListen":           Restart,
	"dataDir":              Restart,
	"ephemeral":            Restart,
	"federation":           Restart,
	"customStreams":        Restart,
	"storage":              Restart,
	"log":                  Restart,
	"tls":                  Restart, // certificate files are re-read on their own when they change
	"publishTokenFile":     Restart,
	"access.readTokenFile": Restart,
	// The trimmer's ticker is started with the log.
	"retentionInterval": Restart,
	// Line length bounds what the log stored and what clients were told.
	"limits.maxLineLength": Restart,
	// The catch-up budget is shared by every connection's pages in flight.
	"limits.maxCatchUpBytes": Restart,

	// Applied by the logs' next retention pass.
	"retention": Live,
	// Connection settings: the keep-alive and the server-wide bounds apply
	// at once; a connection's queue limits and write timeout to connections
	// made after the reload.
	"limits.maxPendingCommands": Live,
	"limits.pingInterval":       Live,
	"limits.pingTimeout":        Live,
	"limits.writeTimeout":       Live,
	"limits.maxPendingBytes":    Live,
	"limits.maxConnections":     Live,
	"limits.identifyTimeout":    Live,
	"limits.maxNameLength":      Live,
	// HTTP and effect limits, read per request or per command.
	"limits.maxRequestBytes": Live,
	"limits.maxUserIPs":      Live,
	// Asked on every command and subscription.
	"access.rules": Live,
}

// ClassOf returns the class of the setting at path (JSON names joined by
// "."), from its own entry or the nearest section's.
func ClassOf(path string) (Class, bool) {
	for p := path; ; {
		if c, ok := settingClasses[p]; ok {
			return c, true
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			return 0, false
		}
		p = p[:i]
	}
}

// SettingPaths lists the path of every setting of Config: each field down
// to the leaves, where a leaf is a value that is not a struct, or a
// Duration.
func SettingPaths() []string {
	var out []string
	walkSettings(reflect.TypeFor[Config](), "", func(path string, _ []int) { out = append(out, path) })
	return out
}

var durationType = reflect.TypeFor[Duration]()

// walkSettings calls leaf for every setting under t, with its path and the
// field index to reach it.
func walkSettings(t reflect.Type, prefix string, leaf func(path string, index []int)) {
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			idx := append(slices.Clone(index), i)
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				walk(f.Type, path, idx)
				continue
			}
			leaf(path, idx)
		}
	}
	walk(t, prefix, nil)
}

// Change is one setting whose value differs between two configs.
type Change struct {
	Path  string
	Class Class
}

// ConfigDiff is what changed between two configs, by class.
type ConfigDiff struct {
	Live    []string
	Restart []string
}

// Empty reports whether nothing changed.
func (d ConfigDiff) Empty() bool { return len(d.Live) == 0 && len(d.Restart) == 0 }

// Diff compares two configs setting by setting (compare them with defaults
// applied, so that writing out a default is no change). A setting without
// a class counts as restart: the safe reading.
func Diff(old, updated Config) ConfigDiff {
	var d ConfigDiff
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(updated)
	walkSettings(ov.Type(), "", func(path string, index []int) {
		a, b := ov.FieldByIndex(index), nv.FieldByIndex(index)
		if equalSetting(a, b) {
			return
		}
		if c, _ := ClassOf(path); c == Live {
			d.Live = append(d.Live, path)
		} else {
			d.Restart = append(d.Restart, path)
		}
	})
	return d
}

// equalSetting compares two values of one setting; an empty and a nil
// list or map are the same setting.
func equalSetting(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice, reflect.Map:
		if a.Len() == 0 && b.Len() == 0 {
			return true
		}
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// RestartSettings returns the config with every live setting at its zero
// value: what a running master cannot take without a restart. The operator
// hashes it into the pod template.
func RestartSettings(c Config) Config {
	v := reflect.ValueOf(&c).Elem()
	walkSettings(v.Type(), "", func(path string, index []int) {
		if cl, _ := ClassOf(path); cl == Live {
			f := v.FieldByIndex(index)
			f.Set(reflect.Zero(f.Type()))
		}
	})
	return c
}

// WithLive returns running with the live settings of updated: what a
// running master becomes when it applies a reload, its restart settings
// unchanged until it restarts.
func WithLive(running, updated Config) Config {
	out := running
	ov, uv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(updated)
	walkSettings(ov.Type(), "", func(path string, index []int) {
		if cl, _ := ClassOf(path); cl == Live {
			ov.FieldByIndex(index).Set(uv.FieldByIndex(index))
		}
	})
	return out
}
