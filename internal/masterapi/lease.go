package masterapi

import "time"

// Failover timing of the PostgreSQL log (docs/operations.md, "Failover and
// fencing"). A standby takes over at most about LeaseTTL +
// StandbyPollInterval after the active master stopped renewing; a killed
// master's session ends with its process, and the standby then takes over
// at its next poll without waiting for the lease.
const (
	DefaultLeaseTTL            = 2 * time.Second
	DefaultLeaseRenewInterval  = 500 * time.Millisecond
	DefaultStandbyPollInterval = 250 * time.Millisecond

	minLeaseTTL = 500 * time.Millisecond
	// minLeaseRenewInterval keeps renewals from becoming load.
	minLeaseRenewInterval = 50 * time.Millisecond
)

// LeaseTimes returns the lease TTL, renew interval and standby poll
// interval with defaults for the unset ones. They are resolved here rather
// than in WithDefaults so that the config the operator renders does not
// change when a default does.
func (l LogConfig) LeaseTimes() (ttl, renew, poll time.Duration) {
	ttl, renew, poll = l.LeaseTTL.Duration, l.LeaseRenewInterval.Duration, l.StandbyPollInterval.Duration
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	if renew == 0 {
		renew = min(DefaultLeaseRenewInterval, ttl/4)
	}
	if poll == 0 {
		poll = min(DefaultStandbyPollInterval, ttl/4)
	}
	return ttl, renew, poll
}

// validateLease checks the lease settings: set only with PostgreSQL, and a
// renewal interval that leaves room for at least one failed or slow
// renewal before the lease runs out.
func (c Config) validateLease(bad func(string, ...any)) {
	l := c.Log
	if l.LeaseTTL.Duration == 0 && l.LeaseRenewInterval.Duration == 0 && l.StandbyPollInterval.Duration == 0 {
		return
	}
	if l.Backend != LogPostgres {
		bad("log.leaseTTL, log.leaseRenewInterval and log.standbyPollInterval are for log.backend %q: remove them, or set the backend", LogPostgres)
		return
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"leaseTTL", l.LeaseTTL.Duration}, {"leaseRenewInterval", l.LeaseRenewInterval.Duration}, {"standbyPollInterval", l.StandbyPollInterval.Duration}} {
		if d.v < 0 {
			bad("log.%s %s must not be negative (leave it unset for the default)", d.name, d.v)
			return
		}
	}
	ttl, renew, poll := l.LeaseTimes()
	if ttl < minLeaseTTL {
		bad("log.leaseTTL %s is too short: use at least %s; a master that misses its renewals for this long loses the log", ttl, minLeaseTTL)
	}
	if renew < minLeaseRenewInterval {
		bad("log.leaseRenewInterval %s is too short: use at least %s", renew, minLeaseRenewInterval)
	}
	if 2*renew > ttl {
		bad("log.leaseRenewInterval %s must be at most half of log.leaseTTL %s, so that one late renewal does not lose the lease", renew, ttl)
	}
	if poll > ttl {
		bad("log.standbyPollInterval %s must not exceed log.leaseTTL %s: takeover would wait longer for the poll than for the lease", poll, ttl)
	}
}
