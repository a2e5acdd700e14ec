package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{"stmdb " + serverVersion + " (protocol ", "module ", "revision ", "go "}
	for _, w := range want {
		if !strings.Contains(out.String(), "\n"+w) && !strings.HasPrefix(out.String(), w) {
			t.Errorf("no line starting %q in\n%s", w, out.String())
		}
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, runtime.GOOS+"/"+runtime.GOARCH) {
		t.Errorf("last line %q does not name the platform", last)
	}
	if code := run([]string{"version", "extra"}, &out, &errb); code != 2 {
		t.Errorf("version with an argument: exit %d, want 2", code)
	}
}
