package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStartServesQueriesWithFsyncAndStops(t *testing.T) {
	s := Start(t)
	dsn := s.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil {
		t.Fatalf("SHOW fsync: %v", err)
	}
	_ = conn.Close(ctx)
	if fsync != "on" {
		t.Fatalf("fsync = %q, want on: the durability tests need a real fsync", fsync)
	}
	s.Stop()
	if err := s.ping(); err == nil {
		t.Fatal("postgres still answers after Stop")
	}
}

func TestRestartKeepsAddressAndData(t *testing.T) {
	s := Start(t)
	s.Exec(t, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
	addr := s.Addr
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("address changed across restart: %s -> %s", addr, s.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("row after restart = %d, %v; want 42", v, err)
	}
}
