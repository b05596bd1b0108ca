//go:build race

package master

// raceEnabled: the race detector slows byte-level JSON work about 30x, so
// the largest tests scale down under it (see TestCatchUpMillionRows).
const raceEnabled = true
