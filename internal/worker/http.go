package worker

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcprepl/tcprepl/internal/workerapi"
)

// HTTPHandler serves /metrics from g, /healthz (the process works: it can
// save positions), /readyz (caught up with the master and the sink takes
// rows) and /v1/status (the durable positions and the readiness reason as
// JSON, which the operator reads). Failing checks answer 503 with the reason
// as text.
func (w *Worker) HTTPHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		st := w.Status()
		if st.StateError != nil {
			http.Error(rw, fmt.Sprintf("cannot save positions: %v", st.StateError), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(rw, "ok")
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		st := w.Status()
		if st.Ready {
			_, _ = fmt.Fprintln(rw, "ok")
			return
		}
		http.Error(rw, notReadyReason(st), http.StatusServiceUnavailable)
	})
	mux.HandleFunc("GET "+workerapi.StatusPath, func(rw http.ResponseWriter, _ *http.Request) {
		st := w.Status()
		body := workerapi.Status{State: st.State, Ready: st.Ready, Positions: st.Positions}
		if !st.Ready {
			body.Reason = notReadyReason(st)
		}
		if body.Positions == nil {
			body.Positions = map[string]int64{}
		}
		rw.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(rw).Encode(body); err != nil {
			// The client went away mid-answer; nothing to tell it.
			return
		}
	})
	return mux
}

// notReadyReason is why a worker that is not ready is not.
func notReadyReason(st Status) string {
	switch {
	case st.SinkError != nil:
		return "sink failing: " + st.SinkError.Error()
	case st.StateError != nil:
		return "cannot save positions: " + st.StateError.Error()
	case st.ConnectionError != nil:
		return st.ConnectionError.Error()
	}
	return "not caught up with the master yet (" + st.State + ")"
}
