package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/workerapi"
)

// WorkerReport is what one worker pod says of itself (its GET /v1/status):
// how far it has durably processed and why it is not ready.
type WorkerReport = workerapi.Status

// WorkerReader reads worker pods' own reports. A pod missing from the
// result did not answer (not started, not the reference worker, or
// stopped); its lag then comes from the master's connection table alone.
type WorkerReader interface {
	ReadWorkers(ctx context.Context, pods []corev1.Pod) map[string]WorkerReport
}

// HTTPWorkerReader reads GET /v1/status on each pod's metrics port, the
// way the probe reads the master's HTTP API.
type HTTPWorkerReader struct {
	Client *http.Client
	// Port overrides specs.WorkerMetricsPort (tests).
	Port int
	// Parallel bounds concurrent requests; 16 when zero.
	Parallel int
}

// maxWorkerReportBody bounds what is read of one pod's answer.
const maxWorkerReportBody = 1 << 20

// defaultWorkerReadTimeout bounds one pod's answer: a frozen worker must
// not hold up the status of the others.
const defaultWorkerReadTimeout = 2 * time.Second

// ReadWorkers implements WorkerReader.
func (r *HTTPWorkerReader) ReadWorkers(ctx context.Context, pods []corev1.Pod) map[string]WorkerReport {
	c := r.Client
	if c == nil {
		c = &http.Client{Timeout: defaultWorkerReadTimeout}
	}
	port := r.Port
	if port == 0 {
		port = specs.WorkerMetricsPort
	}
	parallel := r.Parallel
	if parallel <= 0 {
		parallel = 16
	}
	var (
		mu   sync.Mutex
		out  = map[string]WorkerReport{}
		wg   sync.WaitGroup
		slot = make(chan struct{}, parallel)
	)
	for i := range pods {
		pod := &pods[i]
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
			continue
		}
		url := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)) + workerapi.StatusPath
		name := pod.Name
		wg.Add(1)
		slot <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slot }()
			rep, err := readWorker(ctx, c, url)
			if err != nil {
				return
			}
			mu.Lock()
			out[name] = rep
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func readWorker(ctx context.Context, c *http.Client, url string) (WorkerReport, error) {
	ctx, cancel := context.WithTimeout(ctx, defaultWorkerReadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return WorkerReport{}, fmt.Errorf("worker status request %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return WorkerReport{}, fmt.Errorf("read worker status %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return WorkerReport{}, fmt.Errorf("read worker status %s: HTTP %d", url, resp.StatusCode)
	}
	var rep WorkerReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxWorkerReportBody)).Decode(&rep); err != nil {
		return WorkerReport{}, fmt.Errorf("decode worker status %s: %w", url, err)
	}
	return rep, nil
}
