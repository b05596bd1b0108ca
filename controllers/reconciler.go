package controllers

import (
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/tcprepl/tcprepl/controllers/specs"
)

// transientRetry is how soon a reconcile that hit a stale cache or a write
// conflict is retried.
const transientRetry = 200 * time.Millisecond

// DefaultStatusInterval is the least time between two status writes of one
// resource that only carry new measurements.
const DefaultStatusInterval = 10 * time.Second

// ReconcilerBase is what every reconciler of the operator is given; each
// embeds it. SetupWithManager calls setupStatusLimiter.
type ReconcilerBase struct {
	client.Client
	Scheme  *runtime.Scheme
	Options specs.BuildOptions
	// Observer gives a master probe's snapshot, which holds the master's
	// positions and connection table.
	Observer MasterObserver
	// ProbeEvents, when set, announces masters whose snapshot changed.
	ProbeEvents <-chan event.GenericEvent
	// StatusInterval spaces out measurement-only status writes.
	StatusInterval time.Duration
	// Now is the clock (tests inject one); time.Now when nil.
	Now func() time.Time
	// MaxConcurrentReconciles bounds parallel reconciles (default 1).
	MaxConcurrentReconciles int
	// Recorder, when set, receives an Event for every owned object written
	// and every change of the Ready condition.
	Recorder events.EventRecorder
	// APIReader reads past the cache, to tell a stale cache from an object
	// that is not the operator's. Optional.
	APIReader client.Reader
	// Workers, when set, reads each worker pod's own report (durable
	// positions, why it is not ready).
	Workers WorkerReader
	// Images chooses the operands' images (image.go); nil pins them.
	Images *ImageGate

	limiter *statusLimiter
	// history dates the masters' tokens, to turn a worker's durable
	// position into seconds behind.
	history *tokenHistory
	// reports remembers worker pods' last reports.
	reports *reportMemory
}

// setupStatusLimiter applies the default status interval and makes the
// limiter that spaces out measurement-only status writes.
func (b *ReconcilerBase) setupStatusLimiter() {
	if b.StatusInterval <= 0 {
		b.StatusInterval = DefaultStatusInterval
	}
	b.limiter = newStatusLimiter(b.StatusInterval, b.Now)
	if b.history == nil {
		b.history = newTokenHistory()
	}
	if b.reports == nil {
		b.reports = newReportMemory()
	}
}

// now is the reconciler's clock.
func (b *ReconcilerBase) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}
