package masterapi

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// wantClasses is the class of every setting of Config. The test fails when
// Config gains a setting missing here, so that whoever adds one decides
// whether a running master can take it (and says so in docs/operations.md).
var wantClasses = map[string]Class{
	"serverName":                     Restart,
	"replicationListen":              Restart,
	"httpListen":                     Restart,
	"dataDir":                        Restart,
	"ephemeral":                      Restart,
	"federation":                     Restart,
	"customStreams":                  Restart,
	"retention":                      Live,
	"retentionInterval":              Restart,
	"limits.maxLineLength":           Restart,
	"limits.maxPendingCommands":      Live,
	"limits.pingInterval":            Live,
	"limits.pingTimeout":             Live,
	"limits.writeTimeout":            Live,
	"limits.maxRequestBytes":         Live,
	"limits.maxUserIPs":              Live,
	"limits.maxPendingBytes":         Live,
	"limits.maxCatchUpBytes":         Restart,
	"limits.maxConnections":          Live,
	"limits.identifyTimeout":         Live,
	"limits.maxNameLength":           Live,
	"storage.memTableBytes":          Restart,
	"storage.blockCacheBytes":        Restart,
	"storage.tailCacheBytes":         Restart,
	"log.backend":                    Restart,
	"log.postgresDSNFile":            Restart,
	"publishTokenFile":               Restart,
	"tls.certFile":                   Restart,
	"tls.keyFile":                    Restart,
	"tls.clientCAFile":               Restart,
	"tls.clientAuth":                 Restart,
	"tls.plaintextReplicationListen": Restart,
	"access.rules":                   Live,
	"access.readTokenFile":           Restart,
}

func TestEverySettingHasAClass(t *testing.T) {
	paths := SettingPaths()
	for _, p := range paths {
		if _, ok := ClassOf(p); !ok {
			t.Errorf("setting %q has no class: add it to settingClasses in reload.go (live or restart) and to docs/operations.md", p)
		}
		// Sections classed as a whole (log, tls) take new settings
		// without a test entry; everything else must be listed.
		if _, ok := wantClasses[p]; !ok && !strings.HasPrefix(p, "log.") && !strings.HasPrefix(p, "tls.") {
			t.Errorf("setting %q is not in wantClasses: add it with its class", p)
		}
	}
	for p := range wantClasses {
		if !slices.Contains(paths, p) {
			t.Errorf("wantClasses lists %q, which Config no longer has", p)
		}
	}
}

// changed returns a value of v's type different from v.
func changed(t *testing.T, v reflect.Value) reflect.Value {
	t.Helper()
	if v.Type() == durationType {
		return reflect.ValueOf(Duration{v.Interface().(Duration).Duration + 3*time.Second})
	}
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.String:
		out.SetString(v.String() + "x")
	case reflect.Bool:
		out.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		out.SetInt(v.Int() + 7)
	case reflect.Slice:
		out = reflect.Append(reflect.MakeSlice(v.Type(), 0, 1), reflect.New(v.Type().Elem()).Elem())
	case reflect.Map:
		out = reflect.MakeMap(v.Type())
		out.SetMapIndex(reflect.ValueOf("stream"), reflect.New(v.Type().Elem()).Elem())
	default:
		t.Fatalf("no way to change a %s setting: extend changed()", v.Type())
	}
	return out
}

func TestDiffClassesEverySetting(t *testing.T) {
	base := Config{ServerName: "hs.example"}.WithDefaults()
	for _, path := range SettingPaths() {
		want, ok := wantClasses[path]
		if !ok {
			want, _ = ClassOf(path)
		}
		t.Run(path, func(t *testing.T) {
			updated := base
			v := reflect.ValueOf(&updated).Elem()
			found := false
			walkSettings(v.Type(), "", func(p string, index []int) {
				if p == path {
					f := v.FieldByIndex(index)
					f.Set(changed(t, f))
					found = true
				}
			})
			if !found {
				t.Fatalf("path %s not found", path)
			}
			d := Diff(base, updated)
			var got []string
			if want == Live {
				got = d.Live
				if len(d.Restart) != 0 {
					t.Errorf("restart settings changed: %v", d.Restart)
				}
			} else {
				got = d.Restart
				if len(d.Live) != 0 {
					t.Errorf("live settings changed: %v", d.Live)
				}
			}
			if !slices.Equal(got, []string{path}) {
				t.Errorf("Diff = %+v, want only %s as %s", d, path, want)
			}
			sameRestart := reflect.DeepEqual(RestartSettings(base), RestartSettings(updated))
			if sameRestart != (want == Live) {
				t.Errorf("RestartSettings unchanged = %v for a %s setting", sameRestart, want)
			}
			applied := WithLive(base, updated)
			if want == Live && !reflect.DeepEqual(applied, updated) {
				t.Errorf("WithLive did not take the live change")
			}
			if want == Restart && !reflect.DeepEqual(applied, base) {
				t.Errorf("WithLive took a restart change")
			}
		})
	}
}

func TestDiffTreatsEmptyAndNilAlike(t *testing.T) {
	a := Config{ServerName: "hs"}
	b := a
	b.CustomStreams = []CustomStream{}
	b.Access.Rules = []AccessRule{}
	if d := Diff(a, b); !d.Empty() {
		t.Fatalf("Diff = %+v, want empty", d)
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{Live: "live", Restart: "restart", Class(9): "Class(9)"} {
		if got := c.String(); got != want {
			t.Errorf("%d: %q, want %q", int(c), got, want)
		}
	}
}
