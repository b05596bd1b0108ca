//go:build !linux

package pglog

import "syscall"

// setUserTimeout: TCP_USER_TIMEOUT is Linux's; elsewhere keepalive alone
// bounds a dead connection.
func setUserTimeout(string, string, syscall.RawConn) error { return nil }
