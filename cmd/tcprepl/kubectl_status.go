package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"

	replv1 "github.com/tcprepl/tcprepl/api/v1alpha1"
	"github.com/tcprepl/tcprepl/controllers/specs"
	"github.com/tcprepl/tcprepl/internal/probe"
)

// maxStatusEvents is how many recent Events status shows.
const maxStatusEvents = 10

type kubectlStatusFlags struct {
	target  probeTargetFlags
	output  string
	noProbe bool
}

// newKubectlStatusCommand is `kubectl tcprepl status [master|worker] NAME`.
func newKubectlStatusCommand(deps kubectlDeps, kf *kubeFlags) *cobra.Command {
	var f kubectlStatusFlags
	cmd := &cobra.Command{
		Use:   "status [master|worker] NAME",
		Short: "Show a ReplicationMaster (or ReplicationWorker): conditions, streams, pods, workers, events, live probe",
		Long: `Show what the cluster knows of a ReplicationMaster, read from the API with
your kubeconfig: its conditions, each stream's position and the oldest
token it still holds (a worker further behind cannot catch up), its pods
(ready, restarts, age), the ReplicationWorkers that follow it with their lag,
the recent Events, and a live probe of the master pod (as ` + "`kubectl tcprepl probe`" + `)
when it is reachable from here (--no-probe skips it; --probe-address points
it at a port-forward).

NAME is a ReplicationMaster, else a ReplicationWorker of that name; say
` + "`status worker NAME`" + ` (or master) when both exist. For a worker: its conditions,
its master, each pod with its connection, lag and restarts, and its Events.

Exits 1 when the resource cannot be read; a master that is not ready or not
reachable is shown, not an error.`,
		Example: `  kubectl tcprepl status synapse
  kubectl tcprepl status worker synapse-all -n matrix
  kubectl tcprepl status synapse -o json --no-probe`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.output != "table" && f.output != "json" {
				return fmt.Errorf("--output %q: use table or json", f.output)
			}
			if f.target.wait <= 0 {
				return errors.New("--probe-wait must be a positive duration, e.g. 5s")
			}
			kind, name, err := statusArgs(args)
			if err != nil {
				return err
			}
			c, ns, err := deps.newClient(kf)
			if err != nil {
				return err
			}
			report, err := gatherStatus(cmd.Context(), c, deps, ns, kind, name, &f)
			if err != nil {
				return err
			}
			if f.output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(report); err != nil {
					return fmt.Errorf("write the status as JSON: %w", err)
				}
				return nil
			}
			return writeStatus(cmd.OutOrStdout(), report, deps.now())
		},
	}
	fl := cmd.Flags()
	f.target.addFlags(fl)
	fl.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	fl.BoolVar(&f.noProbe, "no-probe", false, "do not probe the master; show only what the API holds")
	return cmd
}

// Kinds status shows.
const (
	kindMaster = "ReplicationMaster"
	kindWorker = "ReplicationWorker"
)

// statusArgs reads [KIND] NAME; an empty kind means "a master, else a
// worker".
func statusArgs(args []string) (kind, name string, err error) {
	if len(args) == 1 {
		return "", args[0], nil
	}
	switch strings.ToLower(args[0]) {
	case "master", "masters", "rmaster", "replicationmaster", "replicationmasters":
		return kindMaster, args[1], nil
	case "worker", "workers", "rworker", "replicationworker", "replicationworkers":
		return kindWorker, args[1], nil
	}
	return "", "", fmt.Errorf("unknown kind %q: use master or worker (status [master|worker] NAME)", args[0])
}

// statusReport is what status shows: one of Master and Worker is set.
type statusReport struct {
	Kind   string        `json:"kind"`
	Master *masterReport `json:"master,omitempty"`
	Worker *workerReport `json:"worker,omitempty"`
}

type masterReport struct {
	Resource *replv1.ReplicationMaster `json:"resource"`
	Pods     []podReport               `json:"pods"`
	Workers  []workerSummary           `json:"workers"`
	Events   []eventReport             `json:"events"`
	// Probe is the live probe; nil with --no-probe.
	Probe *probeReport `json:"probe,omitempty"`
}

type workerReport struct {
	Resource *replv1.ReplicationWorker `json:"resource"`
	// Master is the master the worker follows; nil when it does not exist.
	Master *workerMaster `json:"master,omitempty"`
	Pods   []podReport   `json:"pods"`
	Events []eventReport `json:"events"`
}

type workerMaster struct {
	Name     string `json:"name"`
	Ready    string `json:"ready"`
	Endpoint string `json:"endpoint,omitempty"`
}

// podReport is a pod as `kubectl get pods` shows it.
type podReport struct {
	Name     string    `json:"name"`
	Phase    string    `json:"phase"`
	Ready    bool      `json:"ready"`
	Restarts int32     `json:"restarts"`
	IP       string    `json:"ip,omitempty"`
	Created  time.Time `json:"created"`
	// Reason is why a container is not running (CrashLoopBackOff, ...).
	Reason string `json:"reason,omitempty"`
	// Probed marks the master pod the probe targets.
	Probed bool `json:"probed,omitempty"`
}

// workerSummary is one ReplicationWorker of a master.
type workerSummary struct {
	Name            string `json:"name"`
	Ready           string `json:"ready"`
	Connected       string `json:"connected"`
	MaxLag          string `json:"maxLag"`
	MaxTokensBehind int64  `json:"maxTokensBehind"`
	LaggingReplicas int32  `json:"laggingReplicas"`
	// Condition is the worker's Ready condition: "True", or the reason it
	// is not.
	Condition string `json:"condition"`
}

type eventReport struct {
	Type     string    `json:"type"`
	Reason   string    `json:"reason"`
	Object   string    `json:"object"`
	Message  string    `json:"message"`
	Count    int32     `json:"count"`
	LastSeen time.Time `json:"lastSeen"`
}

type probeReport struct {
	Target probeTarget `json:"target"`
	// Snapshot is what the probe saw; nil when it could not start.
	Snapshot *probe.Snapshot `json:"snapshot,omitempty"`
	// Error says why the probe failed (also when Snapshot is set).
	Error string `json:"error,omitempty"`
}

// gatherStatus reads everything status shows.
func gatherStatus(ctx context.Context, c client.Client, deps kubectlDeps, ns, kind, name string, f *kubectlStatusFlags) (*statusReport, error) {
	if kind == "" || kind == kindMaster {
		var m replv1.ReplicationMaster
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &m)
		switch {
		case err == nil:
			mr, err := gatherMaster(ctx, c, deps, &m, f)
			if err != nil {
				return nil, err
			}
			return &statusReport{Kind: kindMaster, Master: mr}, nil
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("read ReplicationMaster %s/%s: %w", ns, name, err)
		case kind == kindMaster:
			return nil, fmt.Errorf("no ReplicationMaster %s in namespace %s; list them with `kubectl get rmaster -A`, pick the namespace with -n", name, ns)
		}
	}
	var w replv1.ReplicationWorker
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &w); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("read ReplicationWorker %s/%s: %w", ns, name, err)
		}
		if kind == kindWorker {
			return nil, fmt.Errorf("no ReplicationWorker %s in namespace %s; list them with `kubectl get rworker -A`, pick the namespace with -n", name, ns)
		}
		return nil, fmt.Errorf("no ReplicationMaster or ReplicationWorker %s in namespace %s; list them with `kubectl get rmaster,rworker -A`, pick the namespace with -n", name, ns)
	}
	wr, err := gatherWorker(ctx, c, &w)
	if err != nil {
		return nil, err
	}
	return &statusReport{Kind: kindWorker, Worker: wr}, nil
}

func gatherMaster(ctx context.Context, c client.Client, deps kubectlDeps, m *replv1.ReplicationMaster, f *kubectlStatusFlags) (*masterReport, error) {
	m.ManagedFields = nil
	r := &masterReport{Resource: m}
	var err error
	sel := client.MatchingLabels{specs.LabelName: specs.AppName, specs.LabelComponent: specs.ComponentMaster, specs.LabelInstance: m.Name}
	if r.Pods, err = listPods(ctx, c, m.Namespace, sel); err != nil {
		return nil, err
	}
	probed := masterProbePod(m)
	for i := range r.Pods {
		r.Pods[i].Probed = r.Pods[i].Name == probed
	}
	var workers replv1.ReplicationWorkerList
	if err := c.List(ctx, &workers, client.InNamespace(m.Namespace)); err != nil {
		return nil, fmt.Errorf("list the ReplicationWorkers in %s: %w", m.Namespace, err)
	}
	r.Workers = []workerSummary{}
	for i := range workers.Items {
		w := &workers.Items[i]
		if w.Spec.MasterRef.Name == m.Name {
			r.Workers = append(r.Workers, summarizeWorker(w))
		}
	}
	slices.SortFunc(r.Workers, func(a, b workerSummary) int { return strings.Compare(a.Name, b.Name) })
	objects := map[string]bool{kindMaster + "/" + m.Name: true, "StatefulSet/" + m.Name: true}
	for _, p := range r.Pods {
		objects["Pod/"+p.Name] = true
	}
	if r.Events, err = listEvents(ctx, c, m.Namespace, objects); err != nil {
		return nil, err
	}
	if !f.noProbe {
		r.Probe = probeMaster(ctx, c, deps, m, &f.target)
	}
	return r, nil
}

// probeMaster probes the master once. Every failure is reported in the
// result, not returned: status shows an unreachable master.
func probeMaster(ctx context.Context, c client.Client, deps kubectlDeps, m *replv1.ReplicationMaster, f *probeTargetFlags) *probeReport {
	t, err := resolveProbeTarget(ctx, c, m, f)
	if err != nil {
		return &probeReport{Error: err.Error()}
	}
	pr := &probeReport{Target: t}
	// A shorter heartbeat interval than the probe CLI's: status waits for
	// one heartbeat at most --probe-wait.
	cfg, err := f.probeConfig(m, &pr.Target, deps.getenv, time.Second)
	if err != nil {
		pr.Error = err.Error()
		return pr
	}
	snap, err := deps.probeOnce(ctx, cfg, f.wait)
	if !snap.MeasuredAt.IsZero() {
		if snap.Error == nil {
			snap.Error = err // shown in the probe's table
		}
		if snap.Error != nil {
			snap.ErrorMessage = snap.Error.Error() // and in JSON
		}
		pr.Snapshot = &snap
	}
	if err != nil {
		pr.Error = err.Error()
	}
	return pr
}

func gatherWorker(ctx context.Context, c client.Client, w *replv1.ReplicationWorker) (*workerReport, error) {
	w.ManagedFields = nil
	r := &workerReport{Resource: w}
	var m replv1.ReplicationMaster
	err := c.Get(ctx, client.ObjectKey{Namespace: w.Namespace, Name: w.Spec.MasterRef.Name}, &m)
	switch {
	case err == nil:
		r.Master = &workerMaster{Name: m.Name, Ready: conditionSummary(m.Status.Conditions, replv1.ConditionReady), Endpoint: m.Status.Endpoint}
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("read ReplicationMaster %s/%s: %w", w.Namespace, w.Spec.MasterRef.Name, err)
	}
	if r.Pods, err = listPods(ctx, c, w.Namespace, client.MatchingLabels(specs.WorkerSelectorLabels(w))); err != nil {
		return nil, err
	}
	objects := map[string]bool{kindWorker + "/" + w.Name: true, "StatefulSet/" + specs.WorkerStatefulSetName(w): true}
	for _, p := range r.Pods {
		objects["Pod/"+p.Name] = true
	}
	if r.Events, err = listEvents(ctx, c, w.Namespace, objects); err != nil {
		return nil, err
	}
	return r, nil
}

func summarizeWorker(w *replv1.ReplicationWorker) workerSummary {
	return workerSummary{
		Name:            w.Name,
		Ready:           w.Status.Ready,
		Connected:       w.Status.Connected,
		MaxLag:          w.Status.MaxLag,
		MaxTokensBehind: w.Status.MaxTokensBehind,
		LaggingReplicas: w.Status.LaggingReplicas,
		Condition:       conditionSummary(w.Status.Conditions, replv1.ConditionReady),
	}
}

// conditionSummary is "True", or the status and reason ("False
// (PodNotReady)"), or "Unknown" when the condition is missing.
func conditionSummary(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	switch {
	case c == nil:
		return "Unknown"
	case c.Status == metav1.ConditionTrue:
		return "True"
	default:
		return fmt.Sprintf("%s (%s)", c.Status, c.Reason)
	}
}

func listPods(ctx context.Context, c client.Client, ns string, sel client.MatchingLabels) ([]podReport, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), sel); err != nil {
		return nil, fmt.Errorf("list pods in %s: %w", ns, err)
	}
	out := make([]podReport, 0, len(pods.Items))
	for i := range pods.Items {
		out = append(out, summarizePod(&pods.Items[i]))
	}
	slices.SortFunc(out, func(a, b podReport) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func summarizePod(p *corev1.Pod) podReport {
	r := podReport{Name: p.Name, Phase: string(p.Status.Phase), IP: p.Status.PodIP, Created: p.CreationTimestamp.Time}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			r.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		r.Restarts += cs.RestartCount
		if cs.State.Waiting != nil && r.Reason == "" {
			r.Reason = cs.State.Waiting.Reason
		}
	}
	if p.DeletionTimestamp != nil {
		r.Reason = "Terminating"
	}
	return r
}

// listEvents returns the most recent Events about the objects (keys
// "Kind/name"), newest first. The namespace's Events are listed and
// filtered here: a field selector matches one object only.
func listEvents(ctx context.Context, c client.Client, ns string, objects map[string]bool) ([]eventReport, error) {
	var evs corev1.EventList
	if err := c.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("list events in %s: %w", ns, err)
	}
	out := []eventReport{}
	for i := range evs.Items {
		e := &evs.Items[i]
		obj := e.InvolvedObject.Kind + "/" + e.InvolvedObject.Name
		if !objects[obj] {
			continue
		}
		out = append(out, eventReport{Type: e.Type, Reason: e.Reason, Object: obj, Message: strings.TrimSpace(e.Message), Count: max(e.Count, 1), LastSeen: eventTime(e)})
	}
	slices.SortStableFunc(out, func(a, b eventReport) int { return b.LastSeen.Compare(a.LastSeen) })
	if len(out) > maxStatusEvents {
		out = out[:maxStatusEvents]
	}
	return out, nil
}

// eventTime is when an Event last happened: events.k8s.io Events (the
// operator's) set series or eventTime, core ones lastTimestamp.
func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// writeStatus writes the report for a person, in sections like
// `kubectl cnpg status`.
func writeStatus(w io.Writer, r *statusReport, now time.Time) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	// tabwriter buffers; Flush reports the first write error.
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(tw, format, args...) }
	switch {
	case r.Master != nil:
		writeMaster(p, r.Master, now)
	case r.Worker != nil:
		writeWorker(p, r.Worker, now)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write the status: %w", err)
	}
	if r.Master != nil && r.Master.Probe != nil {
		writeProbe(&buf, r.Master.Probe, now)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("write the status: %w", err)
	}
	return nil
}

type printf func(format string, args ...any)

func writeMaster(p printf, r *masterReport, now time.Time) {
	m := r.Resource
	p("ReplicationMaster %s/%s\n", m.Namespace, m.Name)
	p("  Ready:\t%s\n", conditionSummary(m.Status.Conditions, replv1.ConditionReady))
	p("  Server name:\t%s\n", m.Spec.ServerName)
	p("  Endpoint:\t%s\n", dashIfEmpty(m.Status.Endpoint))
	p("  HTTP API:\t%s\n", dashIfEmpty(m.Status.HTTPEndpoint))
	if m.Status.PublishTokenSecret != "" {
		p("  Publish token:\tSecret %s, key %s\n", m.Status.PublishTokenSecret, specs.PublishTokenKey)
	}
	if m.Status.LogID != "" {
		p("  Log id:\t%s\n", m.Status.LogID)
	}
	storage := "ephemeral (emptyDir: the log is lost with the pod)"
	if !m.Spec.Storage.Ephemeral && m.Spec.Storage.Size != nil {
		storage = "PersistentVolumeClaim of " + m.Spec.Storage.Size.String()
	}
	p("  Storage:\t%s\n", storage)
	p("  Generation:\t%d (observed %d)\n", m.Generation, m.Status.ObservedGeneration)
	p("  Connected workers:\t%d\n", m.Status.ConnectedWorkers)
	if hb := m.Status.Heartbeat; hb != nil {
		stale := ""
		if hb.Stale {
			stale = "  STALE: a heartbeat is overdue"
		}
		p("  Heartbeat:\tlast %s, p50 %s, p99 %s, max %s%s\n", dashIfEmpty(hb.Last), dashIfEmpty(hb.P50), dashIfEmpty(hb.P99), dashIfEmpty(hb.Max), stale)
	}
	if m.Status.LastProbeTime != nil {
		p("  Operator's last probe:\t%s ago\n", age(now, m.Status.LastProbeTime.Time))
	}
	p("\n")
	writeConditions(p, m.Status.Conditions, now)

	p("Streams\n")
	if len(m.Status.Streams) == 0 {
		p("  None in status yet (the operator's probe has not reported).\n")
	} else {
		p("  NAME\tTOKEN\tOLDEST HELD\tROWS/S\n")
		for _, s := range m.Status.Streams {
			oldest := "-"
			if s.OldestToken != nil {
				oldest = fmt.Sprint(*s.OldestToken)
			}
			p("  %s\t%d\t%s\t%s\n", s.Name, s.Token, oldest, dashIfEmpty(s.RowsPerSecond))
		}
	}
	p("\n")
	writePods(p, r.Pods, now)

	p("Workers\n")
	if len(r.Workers) == 0 {
		p("  No ReplicationWorker names this master.\n")
	} else {
		p("  NAME\tREADY\tCONNECTED\tMAX LAG\tTOKENS BEHIND\tLAGGING PODS\tCONDITION\n")
		for _, w := range r.Workers {
			p("  %s\t%s\t%s\t%s\t%d\t%d\t%s\n", w.Name, dashIfEmpty(w.Ready), dashIfEmpty(w.Connected), dashIfEmpty(w.MaxLag), w.MaxTokensBehind, w.LaggingReplicas, w.Condition)
		}
	}
	p("\n")
	writeEvents(p, r.Events, now)
}

func writeWorker(p printf, r *workerReport, now time.Time) {
	w := r.Resource
	p("ReplicationWorker %s/%s\n", w.Namespace, w.Name)
	p("  Ready:\t%s\n", conditionSummary(w.Status.Conditions, replv1.ConditionReady))
	if r.Master == nil {
		p("  Master:\t%s (DOES NOT EXIST in %s)\n", w.Spec.MasterRef.Name, w.Namespace)
	} else {
		p("  Master:\t%s (Ready: %s, %s)\n", r.Master.Name, r.Master.Ready, dashIfEmpty(r.Master.Endpoint))
	}
	streams := strings.Join(w.Spec.Streams, ", ")
	p("  Streams:\t%s\n", dashIfEmpty(streams))
	if w.Spec.Sink != "" {
		p("  Sink:\t%s\n", w.Spec.Sink)
	}
	desired := int32(1)
	if w.Spec.Replicas != nil {
		desired = *w.Spec.Replicas
	}
	p("  Replicas:\t%d desired, %d ready, %d connected, %d lagging\n", desired, w.Status.ReadyReplicas, w.Status.ConnectedReplicas, w.Status.LaggingReplicas)
	p("  Max lag:\t%s (%d tokens)\n", dashIfEmpty(w.Status.MaxLag), w.Status.MaxTokensBehind)
	p("  Generation:\t%d (observed %d)\n", w.Generation, w.Status.ObservedGeneration)
	if w.Status.LastProbeTime != nil {
		p("  Operator's last probe:\t%s ago\n", age(now, w.Status.LastProbeTime.Time))
	}
	p("\n")
	writeConditions(p, w.Status.Conditions, now)

	// The pods as the master sees them (status.pods, the worst 20) joined
	// with the pods themselves.
	byName := map[string]*replv1.WorkerPodStatus{}
	for i := range w.Status.Pods {
		byName[w.Status.Pods[i].Name] = &w.Status.Pods[i]
	}
	p("Pods\n")
	if len(r.Pods) == 0 {
		p("  None.\n")
	} else {
		p("  NAME\tREADY\tCONNECTED\tRESTARTS\tAGE\tBEHIND\tREASON\n")
		for _, pod := range r.Pods {
			connected, behind, reason := "-", "-", pod.Reason
			if st := byName[pod.Name]; st != nil {
				connected = fmt.Sprint(st.Connected)
				behind = workerBehind(st.Streams)
				if st.Reason != "" {
					reason = st.Reason
				}
			}
			p("  %s\t%t\t%s\t%d\t%s\t%s\t%s\n", pod.Name, pod.Ready, connected, pod.Restarts, age(now, pod.Created), behind, dashIfEmpty(reason))
		}
		if w.Status.PodsOmitted > 0 {
			p("  (%d pods are not in the status, which lists the worst %d.)\n", w.Status.PodsOmitted, len(w.Status.Pods))
		}
	}
	p("\n")
	writeEvents(p, r.Events, now)
}

// workerBehind lists the streams a pod is behind on, or "caught up".
func workerBehind(streams []replv1.WorkerStreamStatus) string {
	var parts []string
	for _, s := range streams {
		if s.TokensBehind > 0 {
			parts = append(parts, fmt.Sprintf("%s:%d(%ss)", s.Name, s.TokensBehind, s.SecondsBehind))
		}
	}
	if len(parts) == 0 {
		if len(streams) == 0 {
			return "-"
		}
		return "caught up"
	}
	return strings.Join(parts, " ")
}

func writeConditions(p printf, conds []metav1.Condition, now time.Time) {
	p("Conditions\n")
	if len(conds) == 0 {
		p("  None yet.\n\n")
		return
	}
	p("  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE\n")
	for _, c := range conds {
		p("  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, age(now, c.LastTransitionTime.Time), dashIfEmpty(oneLine(c.Message)))
	}
	p("\n")
}

func writePods(p printf, pods []podReport, now time.Time) {
	p("Pods\n")
	if len(pods) == 0 {
		p("  None.\n\n")
		return
	}
	p("  NAME\tREADY\tSTATUS\tRESTARTS\tAGE\tIP\n")
	for _, pod := range pods {
		status := pod.Phase
		if pod.Reason != "" {
			status = pod.Reason
		}
		name := pod.Name
		if pod.Probed {
			name += " (probed)"
		}
		p("  %s\t%t\t%s\t%d\t%s\t%s\n", name, pod.Ready, dashIfEmpty(status), pod.Restarts, age(now, pod.Created), dashIfEmpty(pod.IP))
	}
	p("\n")
}

func writeEvents(p printf, evs []eventReport, now time.Time) {
	p("Events (newest first)\n")
	if len(evs) == 0 {
		p("  None.\n")
		return
	}
	p("  LAST SEEN\tTYPE\tREASON\tOBJECT\tMESSAGE\n")
	for _, e := range evs {
		count := ""
		if e.Count > 1 {
			count = fmt.Sprintf(" (x%d)", e.Count)
		}
		p("  %s ago\t%s\t%s\t%s\t%s%s\n", age(now, e.LastSeen), e.Type, e.Reason, e.Object, oneLine(e.Message), count)
	}
}

// writeProbe appends the live probe: the probe's own table, indented.
func writeProbe(buf *bytes.Buffer, pr *probeReport, now time.Time) {
	buf.WriteString("\nLive probe")
	if pr.Target.Address != "" {
		fmt.Fprintf(buf, " of %s at %s (from the %s)", pr.Target.Pod, pr.Target.Address, pr.Target.Source)
	}
	buf.WriteString("\n")
	if pr.Snapshot == nil {
		fmt.Fprintf(buf, "  Not run: %s\n", pr.Error)
		return
	}
	var inner bytes.Buffer
	if err := probe.WriteTable(&inner, *pr.Snapshot, now); err != nil {
		fmt.Fprintf(buf, "  %v\n", err)
		return
	}
	for line := range strings.Lines(inner.String()) {
		if strings.TrimSpace(line) == "" {
			buf.WriteString("\n")
			continue
		}
		buf.WriteString("  " + line)
	}
	if !pr.Snapshot.Reachable {
		buf.WriteString("  Not reachable from here? Use --probe-address HOST:PORT (e.g. through `kubectl port-forward pod/" + pr.Target.Pod + "`), or --no-probe.\n")
	}
}

// age is a duration as kubectl's AGE column shows it.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(now.Sub(t))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
