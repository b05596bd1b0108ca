package main

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestSharedListenerOutlivesItsViews: closing a view (as a server's
// Shutdown does) stops only that view's Accept; the socket stays open and
// the next view accepts on the same address; closing the shared listener
// ends every view.
func TestSharedListenerOutlivesItsViews(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newSharedListener(raw)
	addr := raw.Addr().String()
	first := s.view()
	accepted := make(chan error, 1)
	go func() {
		_, err := first.Accept()
		accepted <- err
	}()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept on a closed view: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after its view was closed")
	}
	second := s.view()
	if second.Addr().String() != addr {
		t.Fatalf("view address %s, want %s", second.Addr(), addr)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial after the first view closed: %v", err)
	}
	defer c.Close()
	sc, err := second.Accept()
	if err != nil {
		t.Fatalf("second view Accept: %v", err)
	}
	if _, err := io.WriteString(sc, "x"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("read through the accepted connection: %q %v", b, err)
	}
	_ = sc.Close()
	s.close()
	if _, err := s.view().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after the shared listener closed: %v, want net.ErrClosed", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("the socket still accepts after the shared listener closed")
	}
}
