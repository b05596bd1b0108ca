package controllers

import (
	"fmt"
	"time"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
)

// SynapseOptions configure the SynapseReplication controller.
type SynapseOptions struct {
	// NewWatcher makes the watcher of one SynapseReplication. Nil (and no
	// Watchers) leaves SynapseReplications unreconciled.
	NewWatcher SynapseWatcherFactory
	// ParseStreamWriters reads stream_writers out of a homeserver config.
	ParseStreamWriters StreamWritersParser
	// Resync is how often a resource is reconciled without a trigger, which
	// is how soon a changed Secret or ConfigMap is noticed.
	Resync time.Duration
	// PollInterval is how often the watchers' snapshots are checked for
	// news.
	PollInterval time.Duration
	// Watchers replaces the watcher manager (tests).
	Watchers SynapseWatcherController
}

// setupSynapseReplication adds the watcher manager and the
// SynapseReplication controller to mgr.
func setupSynapseReplication(mgr ctrl.Manager, o OperatorOptions, rec events.EventRecorder) error {
	so := o.Synapse
	if so.NewWatcher == nil && so.Watchers == nil {
		return nil
	}
	r := &SynapseReplicationReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec,
		Watchers: so.Watchers, ParseStreamWriters: so.ParseStreamWriters,
		StatusInterval: o.StatusInterval, Resync: so.Resync,
		MaxConcurrentReconciles: o.MaxConcurrentReconciles,
	}
	if r.Watchers == nil {
		poll := so.PollInterval
		if poll <= 0 {
			poll = o.ProbePollInterval
		}
		sw := NewSynapseWatchers(so.NewWatcher, poll, o.Logger.WithName("synapse-watchers"))
		if err := registerSynapseMetrics(sw); err != nil {
			return fmt.Errorf("register SynapseReplication metrics: %w", err)
		}
		if err := mgr.Add(sw); err != nil {
			return fmt.Errorf("add Synapse watcher manager: %w", err)
		}
		r.Watchers = sw
		r.WatcherEvents = sw.Subscribe()
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up SynapseReplication controller: %w", err)
	}
	return nil
}
