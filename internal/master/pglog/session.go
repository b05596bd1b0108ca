package pglog

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Keep-alive settings of every session to PostgreSQL. A node that vanishes
// without closing its connections (power loss, a partition: no FIN, no RST)
// must not keep its sessions, and with them the writer's advisory lock,
// open for the kernel's default of two hours. Both ends probe: the master's
// sockets (TCP keepalive and TCP_USER_TIMEOUT, so that unacknowledged data
// fails the socket too) and the server's backend, through the session
// settings below. Either end then gives up after about
// keepAliveIdle + keepAliveCount*keepAliveInterval = 11 s of silence, or
// userTimeout = 5 s after data went unacknowledged. The lease (lease.go)
// does not wait for any of this: these bounds only decide how soon the
// dead sessions are cleaned up.
const (
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	keepAliveCount    = 3
	userTimeout       = 5 * time.Second
	// idleInTransactionTimeout ends a session that stopped halfway through
	// a transaction (its process was frozen mid-commit), releasing the row
	// locks the next writer's takeover needs.
	idleInTransactionTimeout = 5 * time.Second
	// connectTimeout bounds dialling when the DSN sets none.
	connectTimeout = 10 * time.Second
)

// applicationName names every session of one writer incarnation, so that
// the standby that takes over can end exactly the sessions of the writer it
// replaces (pg_terminate_backend), and an operator can see them in
// pg_stat_activity.
func applicationName(holder string) string { return "tcprepl-" + holder }

// sessionParams are the server settings every session sets at connect.
func sessionParams(holder string) map[string]string {
	return map[string]string{
		"application_name":                    applicationName(holder),
		"tcp_keepalives_idle":                 strconv.Itoa(int(keepAliveIdle / time.Second)),
		"tcp_keepalives_interval":             strconv.Itoa(int(keepAliveInterval / time.Second)),
		"tcp_keepalives_count":                strconv.Itoa(keepAliveCount),
		"tcp_user_timeout":                    strconv.Itoa(int(userTimeout / time.Millisecond)),
		"idle_in_transaction_session_timeout": strconv.Itoa(int(idleInTransactionTimeout / time.Millisecond)),
	}
}

// dialer is the master's side of the keep-alives.
func dialer() *net.Dialer {
	return &net.Dialer{
		Timeout: connectTimeout,
		KeepAliveConfig: net.KeepAliveConfig{
			Enable:   true,
			Idle:     keepAliveIdle,
			Interval: keepAliveInterval,
			Count:    keepAliveCount,
		},
		Control: setUserTimeout,
	}
}

// configure applies the keep-alives and the session settings to a parsed
// connection config. The DSN's own runtime parameters are kept, except
// application_name, which takeover relies on.
func configure(cfg *pgx.ConnConfig, holder string) {
	d := dialer()
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	for k, v := range sessionParams(holder) {
		if _, set := cfg.RuntimeParams[k]; set && k != "application_name" {
			continue
		}
		cfg.RuntimeParams[k] = v
	}
}

// connConfig parses the DSN into a session config of writer holder.
func connConfig(dsn, holder string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse the PostgreSQL DSN: %w", err)
	}
	configure(cfg, holder)
	return cfg, nil
}

// poolConfig is connConfig for the read pool.
func poolConfig(dsn, holder string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse the PostgreSQL DSN: %w", err)
	}
	configure(cfg.ConnConfig, holder)
	return cfg, nil
}
