package specs

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/internal/masterapi"
)

func onPostgres(p replv1.PostgresStorage, replicas int32) func(*replv1.ReplicationMaster) {
	return func(m *replv1.ReplicationMaster) {
		m.Spec.Storage = replv1.StorageSpec{Postgres: &p}
		m.Spec.Replicas = ptr.To(replicas)
	}
}

func TestPostgresURIRef(t *testing.T) {
	tests := map[string]struct {
		m      *replv1.ReplicationMaster
		want   replv1.SecretKeyRef
		wantOK bool
	}{
		"volume":     {m: newMaster()},
		"secret ref": {m: newMaster(onPostgres(replv1.PostgresStorage{URISecretRef: &replv1.SecretKeyRef{Name: "s", Key: "k"}}, 1)), want: replv1.SecretKeyRef{Name: "s", Key: "k"}, wantOK: true},
		"cnpg":       {m: newMaster(onPostgres(replv1.PostgresStorage{Cluster: "db"}, 1)), want: replv1.SecretKeyRef{Name: "db-app", Key: "uri"}, wantOK: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := PostgresURIRef(tc.m)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("PostgresURIRef = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// A master on PostgreSQL: no volume and no data dir, the URI from the
// Secret in the environment, the log backend in the config, spec.replicas
// pods started in parallel and rolled by the operator, a 1 s readiness
// probe.
func TestBuildMasterStatefulSetOnPostgres(t *testing.T) {
	m := newMaster(onPostgres(replv1.PostgresStorage{Cluster: "db"}, 3))
	sts := BuildMasterStatefulSet(m, testOpts, "h")
	if got := ptr.Deref(sts.Spec.Replicas, 0); got != 3 {
		t.Errorf("replicas %d, want 3", got)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement || sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		t.Errorf("pod management %s, update %s; want Parallel, OnDelete", sts.Spec.PodManagementPolicy, sts.Spec.UpdateStrategy.Type)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 0 {
		t.Errorf("claims %+v, want none", sts.Spec.VolumeClaimTemplates)
	}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name == "data" {
			t.Errorf("a data volume: %+v", v)
		}
	}
	c := sts.Spec.Template.Spec.Containers[0]
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--data-dir") {
			t.Errorf("arg %s on PostgreSQL", a)
		}
	}
	for _, vm := range c.VolumeMounts {
		if vm.Name == "data" {
			t.Errorf("a data mount: %+v", vm)
		}
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == masterapi.PostgresDSNEnv })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil ||
		c.Env[i].ValueFrom.SecretKeyRef.Name != "db-app" || c.Env[i].ValueFrom.SecretKeyRef.Key != "uri" {
		t.Errorf("env %+v, want %s from Secret db-app key uri", c.Env, masterapi.PostgresDSNEnv)
	}
	if p := c.ReadinessProbe; p.PeriodSeconds != 1 || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %+v, want /readyz every 1 s", p)
	}

	cfg, err := RenderMasterConfig(m)
	if err != nil {
		t.Fatal(err)
	}
	var parsed masterapi.Config
	if err := yaml.UnmarshalStrict([]byte(cfg), &parsed); err != nil {
		t.Fatal(err)
	}
	if parsed.Log.Backend != masterapi.LogPostgres || parsed.DataDir != "" || strings.Contains(cfg, "postgresql://") {
		t.Errorf("config %q: want log.backend postgres, no dataDir, no URI", cfg)
	}
	if err := parsed.WithDefaults().Validate(); err != nil {
		t.Errorf("the master would refuse its config: %v", err)
	}
}

// Masters on a volume keep exactly their template (one pod, ordered, rolled
// by the StatefulSet controller, the data dir last among the args): a
// changed template would roll every existing master when the operator is
// upgraded.
func TestBuildMasterStatefulSetOnVolumeUnchanged(t *testing.T) {
	sts := BuildMasterStatefulSet(newMaster(), testOpts, "h")
	c := sts.Spec.Template.Spec.Containers[0]
	if ptr.Deref(sts.Spec.Replicas, 0) != 1 || sts.Spec.PodManagementPolicy != appsv1.OrderedReadyPodManagement || sts.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Errorf("replicas %v, %s, %s", sts.Spec.Replicas, sts.Spec.PodManagementPolicy, sts.Spec.UpdateStrategy.Type)
	}
	if got := c.Args[len(c.Args)-1]; got != "--data-dir="+MasterDataDir {
		t.Errorf("last arg %q", got)
	}
	var mounts []string
	for _, vm := range c.VolumeMounts {
		mounts = append(mounts, vm.Name)
	}
	if want := []string{"config", "data", "tmp"}; !slices.Equal(mounts, want) {
		t.Errorf("mounts %v, want %v", mounts, want)
	}
	if c.ReadinessProbe.PeriodSeconds != 5 {
		t.Errorf("readiness period %d, want 5", c.ReadinessProbe.PeriodSeconds)
	}
}
