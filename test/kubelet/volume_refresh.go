package kubelet

import (
	"context"
	"time"
)

// A running pod's ConfigMap, Secret, downward-API and projected volumes
// follow their sources, as with a real kubelet: every Options.VolumeResync
// the pod worker reads them again, from the kubelet's watch caches (so it
// costs the API server nothing), and publishes a new version of the files
// that changed (atomically, see atomic_writer.go). Like the kubelet's, the
// update is eventually consistent, is not applied to subPath mounts in
// image mode (a bind mount of one file keeps the version it was made
// with), and a source that cannot be read or a file whose names do not
// resolve leaves the last version in place until the next try.

// volumeDirs writes the pod's volumes for a container start. It is
// serialised with the refresh loop and other starts of the same pod, which
// write the same directories.
func (w *podWorker) volumeDirs(ctx context.Context, b *specBuilder) (map[string]string, error) {
	w.volMu.Lock()
	defer w.volMu.Unlock()
	return b.volumeDirs(ctx)
}

// refreshVolumes runs until the pod's processes stop (ctx ends).
func (w *podWorker) refreshVolumes(ctx context.Context) {
	tick := time.NewTicker(w.k.opts.VolumeResync)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := w.refreshOnce(ctx)
		switch {
		case err == nil:
			failing = false
		case ctx.Err() != nil:
			return
		case !failing:
			// Once per run of failures: a deleted ConfigMap would
			// otherwise log every second.
			failing = true
			w.k.logf("pod %s: refresh volumes: %v (keeping the files it has; retrying)", w.key, err)
		}
	}
}

// refreshOnce brings every refreshable volume up to date with its source.
func (w *podWorker) refreshOnce(ctx context.Context) error {
	w.mu.Lock()
	pod := w.pod.DeepCopy()
	w.mu.Unlock()
	b := w.k.builder(pod, w.ip, w.dir)
	b.configMaps, b.secrets = w.k.cms, w.k.secrets
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	w.volMu.Lock()
	defer w.volMu.Unlock()
	_, changed, err := b.writeVolumes(ctx, true)
	for _, name := range changed {
		w.k.logf("pod %s: volume %s updated from its source", w.key, name)
	}
	return err
}
