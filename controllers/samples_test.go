package controllers

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
)

// TestSampleWorkerSinksWorkInThePod checks that `kubectl apply -k
// config/samples` gives a master and workers that can become ready. The reference worker
// is ready only while its sink takes rows, so a sample's sink must work in
// the pod the operator builds without any service the samples do not
// create: stdout, or a file on one of the pod's writable volumes.
func TestSampleWorkerSinksWorkInThePod(t *testing.T) {
	dir := filepath.Join("..", "config", "samples")
	var kustomization struct {
		Resources []string `json:"resources"`
	}
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &kustomization)
	files, err := filepath.Glob(filepath.Join(dir, "replication_*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	inKustomization := func(f string) {
		if !slices.Contains(kustomization.Resources, filepath.Base(f)) {
			t.Errorf("%s is not in config/samples/kustomization.yaml", filepath.Base(f))
		}
	}
	inKustomization("replication_v1alpha1_replicationmaster.yaml")

	var master replv1.ReplicationMaster
	readYAML(t, filepath.Join(dir, "replication_v1alpha1_replicationmaster.yaml"), &master)
	master.Namespace = "default"
	workers := 0
	for _, f := range files {
		var meta struct {
			Kind string `json:"kind"`
		}
		readYAML(t, f, &meta)
		if meta.Kind != "ReplicationWorker" {
			continue
		}
		inKustomization(f)
		var w replv1.ReplicationWorker
		readYAML(t, f, &w)
		workers++
		t.Run(w.Name, func(t *testing.T) {
			if w.Spec.MasterRef.Name != master.Name {
				t.Fatalf("masterRef %q; the sample master is %q", w.Spec.MasterRef.Name, master.Name)
			}
			w.Namespace = master.Namespace
			d := specs.BuildWorkerStatefulSet(&w, &master, testOpts)
			sink := w.Spec.Sink
			switch {
			case sink == "" || sink == "stdout":
			case strings.HasPrefix(sink, "file:"):
				path := strings.TrimPrefix(sink, "file:")
				writable := false
				for _, m := range d.Spec.Template.Spec.Containers[0].VolumeMounts {
					if !m.ReadOnly && strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
						writable = true
					}
				}
				if !writable {
					t.Errorf("sink %q is not on a writable volume of the worker pod (mounts %+v): the root filesystem is read-only", sink, d.Spec.Template.Spec.Containers[0].VolumeMounts)
				}
			default:
				t.Errorf("sink %q needs a service the samples do not create: the worker stays unready until it answers", sink)
			}
		})
	}
	if workers == 0 {
		t.Fatal("no ReplicationWorker among the samples")
	}
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
