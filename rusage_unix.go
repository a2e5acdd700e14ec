//go:build unix

package main

import (
	"time"

	"golang.org/x/sys/unix"
)

// processCPUTime is the user plus system CPU time of this process so far.
func processCPUTime() (time.Duration, bool) {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
