//go:build race

package replication

// raceEnabled scales the long tests down under the race detector, which
// slows this code about tenfold.
const raceEnabled = true
