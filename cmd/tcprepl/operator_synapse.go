package main

import (
	"github.com/go-logr/logr"

	"github.com/tcprepl/tcprepl/controllers"
	"github.com/tcprepl/tcprepl/internal/synapse"
)

// synapseOptions wires the SynapseReplication controller to the Redis
// watcher of internal/synapse.
func synapseOptions(log logr.Logger) controllers.SynapseOptions {
	return controllers.SynapseOptions{
		NewWatcher: func(t controllers.SynapseWatchTarget) (controllers.SynapseWatcher, error) {
			return synapse.NewWatcher(synapse.Config{
				Addr: t.Addr, Username: t.Username, Password: t.Password, DB: t.DB, TLS: t.TLS,
				ServerName: t.ServerName, SolicitInterval: t.SolicitInterval, StreamWriters: t.StreamWriters,
				Logger: log.WithValues("serverName", t.ServerName),
			})
		},
		ParseStreamWriters: synapse.ParseStreamWriters,
	}
}
