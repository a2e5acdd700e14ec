//go:build race

package main

// raceEnabled lets heavy tests scale down under the race detector, which
// slows this code by 5-10x.
const raceEnabled = true
