package main

import (
	"time"

	"golang.org/x/sys/windows"
)

// processCPUTime is the user plus kernel CPU time of this process so far.
func processCPUTime() (time.Duration, bool) {
	var creation, exit, kernel, user windows.Filetime
	if windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user) != nil {
		return 0, false
	}
	// Filetimes count 100 ns ticks.
	ticks := func(t windows.Filetime) int64 { return int64(t.HighDateTime)<<32 | int64(t.LowDateTime) }
	return time.Duration(ticks(kernel)+ticks(user)) * 100, true
}
