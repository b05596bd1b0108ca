// Command echoserver is the workload of the test kubelet's own tests: an
// HTTP server that reports what its pod gave it (name, env, files) and can
// call a peer through a Service name.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "listen address")
	config := flag.String("config", "", "file whose content /info reports")
	peer := flag.String("peer", "", "host:port /peer fetches /info from")
	exitAfter := flag.Duration("exit-after", 0, "exit with status 3 after this long (crash test)")
	flag.Parse()
	if *exitAfter > 0 {
		go func() { time.Sleep(*exitAfter); os.Exit(3) }()
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	http.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := os.Stat(os.Getenv("HOME") + "/not-ready"); err == nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/info", func(w http.ResponseWriter, _ *http.Request) {
		info := map[string]string{
			"listen":    *listen,
			"pod":       os.Getenv("MY_POD"),
			"namespace": os.Getenv("MY_NAMESPACE"),
			"podIP":     os.Getenv("MY_POD_IP"),
			"secret":    os.Getenv("MY_SECRET"),
			"fromCM":    os.Getenv("MY_CM"),
			"peer":      *peer,
		}
		if *config != "" {
			b, err := os.ReadFile(*config)
			if err != nil {
				info["configError"] = err.Error()
			}
			info["config"] = string(b)
		}
		_ = json.NewEncoder(w).Encode(info)
	})
	http.HandleFunc("/peer", func(w http.ResponseWriter, _ *http.Request) {
		c := http.Client{Timeout: 3 * time.Second}
		resp, err := c.Get("http://" + *peer + "/info")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(w, resp.Body)
	})
	if err := http.ListenAndServe(*listen, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
