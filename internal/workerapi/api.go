// Package workerapi holds what the reference worker shares with other
// processes: the JSON of its GET /v1/status, which the operator reads to
// learn how far each worker pod has durably processed and why it is not
// ready. It links nothing of the worker, so the operator can import it.
package workerapi

// StatusPath is the worker's status endpoint on its metrics port.
const StatusPath = "/v1/status"

// Status is the body of GET /v1/status.
type Status struct {
	// State is the connection state: connecting, connected, caught-up or
	// disconnected.
	State string `json:"state"`
	// Ready is what /readyz answers: caught up and the sink takes rows.
	Ready bool `json:"ready"`
	// Reason says why the worker is not ready (the /readyz body); empty
	// when it is.
	Reason string `json:"reason,omitempty"`
	// Positions holds each stream's durable position: the last token the
	// sink accepted and the worker saved (tcprepl_worker_position).
	Positions map[string]int64 `json:"positions"`
}
