package bench

import "time"

// Throughput is one publish phase.
type Throughput struct {
	Publisher string  `json:"publisher"`
	Rows      int64   `json:"rows"`
	Seconds   float64 `json:"seconds"`
	// PublishRowsPerSec is the durable publish rate (every row acknowledged).
	PublishRowsPerSec float64 `json:"publishRowsPerSec"`
	// DeliveredRowsPerSec is rows received by all subscribers together,
	// from the first publish to the last delivery.
	DeliveredRowsPerSec float64 `json:"deliveredRowsPerSec"`
	// SlowestSubscriberRowsPerSec: the slowest subscriber's own rate; at or
	// near PublishRowsPerSec means every subscriber kept pace.
	SlowestSubscriberRowsPerSec float64 `json:"slowestSubscriberRowsPerSec"`
	// DrainSeconds is how long after the last publish the last subscriber
	// received the last row.
	DrainSeconds float64 `json:"drainSeconds"`
	Subscribers  int     `json:"subscribers"`
	CPU
}

// CPU is the CPU time a phase took in the measured process (the master's
// when spawned or given by pid; the whole benchmark's when in-process),
// per row published and per row delivered. On a machine shared with other
// work the rates above are bounded by the CPU this process got; CPU per row
// says what the same work costs on an idle machine.
type CPU struct {
	CPUSeconds           float64 `json:"cpuSeconds"`
	CPUMicrosPerRowIn    float64 `json:"cpuMicrosPerRowPublished,omitempty"`
	CPUMicrosPerRowOut   float64 `json:"cpuMicrosPerRowDelivered"`
	ProcessCPUUtilised   float64 `json:"processCoresUsed"`
	LoadAverageAtTheTime string  `json:"loadAverage"`
	// ClientCoresUsed is the benchmark process's own CPU (publishers and
	// subscribers) when the master runs elsewhere; it competes for the
	// same cores.
	ClientCoresUsed float64 `json:"clientCoresUsed,omitempty"`
	// DatabaseCoresUsed and DatabaseCPUMicrosPerRow are the PostgreSQL
	// server's CPU (all its processes) when the log is PostgreSQL on this
	// machine: the log's cost is the master's CPU plus this. Per row
	// published in a publish phase, per row delivered in catch-up.
	DatabaseCoresUsed       float64 `json:"databaseCoresUsed,omitempty"`
	DatabaseCPUMicrosPerRow float64 `json:"databaseCpuMicrosPerRow,omitempty"`
}

// CatchUp is one catch-up phase.
type CatchUp struct {
	Subscribers int     `json:"subscribers"`
	RowsEach    int64   `json:"rowsEach"`
	Seconds     float64 `json:"seconds"`
	// RowsPerSec is rows delivered to all subscribers together per second.
	RowsPerSec float64 `json:"rowsPerSec"`
	CPU
}

// Latency is the publish-to-deliver latency at a fixed publish rate.
type Latency struct {
	RateRowsPerSec int           `json:"rateRowsPerSec"`
	Subscribers    int           `json:"subscribers"`
	Samples        int           `json:"samples"`
	P50            time.Duration `json:"p50"`
	P99            time.Duration `json:"p99"`
	Max            time.Duration `json:"max"`
	AchievedRate   float64       `json:"achievedRowsPerSec"`
	// AckP50 and AckP99 are from the scheduled publish time to the
	// publisher's acknowledgement (durable): the storage's share of the
	// publish-to-deliver latency.
	AckP50 time.Duration `json:"ackP50"`
	AckP99 time.Duration `json:"ackP99"`
}

// Results is everything one run measured.
type Results struct {
	Mode Mode `json:"mode"`
	// Log is the master's stream log (pebble or postgres); empty for an
	// external master.
	Log string `json:"log,omitempty"`
	// Subscribers is the kind of every subscriber in the run.
	Subscribers SubscriberKind `json:"subscribers"`
	Throughput  []Throughput   `json:"throughput"`
	CatchUp     []CatchUp      `json:"catchUp"`
	Latency     *Latency       `json:"latency,omitempty"`
	// PeakRSSBytes is VmHWM of the master's process (the whole benchmark
	// process when InProcess); 0 when unknown.
	PeakRSSBytes int64  `json:"peakRSSBytes"`
	PeakRSSOf    string `json:"peakRSSOf"`
	// BytesPerIdleConn is the master's memory growth per idle connection.
	BytesPerIdleConn float64 `json:"bytesPerIdleConn"`
	IdleConnMethod   string  `json:"idleConnMethod"`
}
