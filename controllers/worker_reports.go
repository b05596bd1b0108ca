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
	"k8s.io/apimachinery/pkg/types"

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

// reportMemory keeps each worker pod's last report. A worker frozen (say
// by SIGSTOP) answers nothing, its HTTP server being frozen with it: its
// last durable position is then the best knowledge, and its silence is
// itself the news.
type reportMemory struct {
	mu   sync.Mutex
	last map[types.NamespacedName]map[types.UID]rememberedReport
}

type rememberedReport struct {
	report WorkerReport
	at     time.Time
}

func newReportMemory() *reportMemory {
	return &reportMemory{last: map[types.NamespacedName]map[types.UID]rememberedReport{}}
}

// merge records the fresh reports and fills in, for pods that did not
// answer, their last report, marked not ready with the reason. Pods gone
// from the list are forgotten.
func (rm *reportMemory) merge(worker types.NamespacedName, pods []corev1.Pod, fresh map[string]WorkerReport, now time.Time) map[string]WorkerReport {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	old := rm.last[worker]
	kept := make(map[types.UID]rememberedReport, len(pods))
	out := make(map[string]WorkerReport, len(pods))
	for i := range pods {
		pod := &pods[i]
		if rep, ok := fresh[pod.Name]; ok {
			kept[pod.UID] = rememberedReport{report: rep, at: now}
			out[pod.Name] = rep
			continue
		}
		prev, ok := old[pod.UID]
		if !ok || pod.DeletionTimestamp != nil {
			continue
		}
		kept[pod.UID] = prev
		rep := prev.report
		rep.Ready = false
		rep.Reason = fmt.Sprintf("not answering %s since %s (stalled or overloaded); lag counted from its last reported position", workerapi.StatusPath, prev.at.UTC().Format(time.RFC3339))
		out[pod.Name] = rep
	}
	if len(kept) == 0 {
		delete(rm.last, worker)
	} else {
		rm.last[worker] = kept
	}
	return out
}

// forget drops a deleted worker's reports.
func (rm *reportMemory) forget(worker types.NamespacedName) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	delete(rm.last, worker)
}
