package worker

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPHandler serves /metrics from g, /healthz (the process works: it can
// save positions) and /readyz (caught up with the master and the sink takes
// rows). Failing checks answer 503 with the reason as text.
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
		reason := "not caught up with the master yet (" + st.State + ")"
		switch {
		case st.SinkError != nil:
			reason = "sink failing: " + st.SinkError.Error()
		case st.StateError != nil:
			reason = "cannot save positions: " + st.StateError.Error()
		case st.ConnectionError != nil:
			reason = st.ConnectionError.Error()
		}
		http.Error(rw, reason, http.StatusServiceUnavailable)
	})
	return mux
}
