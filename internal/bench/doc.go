// Package bench drives a real tcprepl master over TCP and measures its
// durable publish rate, the rate delivered to live subscribers, the
// catch-up rate, publish-to-deliver latency, the master's peak RSS and the
// memory of an idle connection.
package bench
