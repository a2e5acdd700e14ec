package main

// `stmdb version`: what this binary is, read from the build information the
// Go toolchain stamps into every binary (debug.ReadBuildInfo), so a report
// from a deployed server names the exact commit and toolchain.

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// buildRevision stands in for the VCS revision when the binary was built
// without one (a Docker build context has no .git): -ldflags
// "-X main.buildRevision=$(git rev-parse HEAD)".
var buildRevision = "unknown"

// versionInfo is what `stmdb version` prints.
type versionInfo struct {
	Version  string // serverVersion, set with -ldflags "-X main.serverVersion=..."
	Protocol int
	Module   string // main module version: a tag, a pseudo-version, or (devel)
	Revision string // VCS commit, with "+dirty" for uncommitted changes
	Time     string // commit time
	Go       string // toolchain
	Platform string // GOOS/GOARCH
}

// buildVersion reads the build information of the running binary.
func buildVersion() versionInfo {
	v := versionInfo{Version: serverVersion, Protocol: protocolVersion,
		Module: "unknown", Revision: buildRevision, Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Go = bi.GoVersion
	if bi.Main.Version != "" {
		v.Module = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		case "GOARM":
			v.Platform += "/v" + s.Value
		}
	}
	if dirty {
		v.Revision += "+dirty"
	}
	return v
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: stmdb version") }
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	v := buildVersion()
	fmt.Fprintf(stdout, "stmdb %s (protocol %d)\n", v.Version, v.Protocol)
	fmt.Fprintf(stdout, "module   %s\n", v.Module)
	fmt.Fprintf(stdout, "revision %s\n", v.Revision)
	if v.Time != "" {
		fmt.Fprintf(stdout, "time     %s\n", v.Time)
	}
	fmt.Fprintf(stdout, "go       %s %s\n", v.Go, v.Platform)
	return 0
}
