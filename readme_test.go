package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReadmeLayout keeps README's Layout table true: it names every
// hand-written source file at the root (tests aside) and every directory,
// and nothing else.
func TestReadmeLayout(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n## Layout\n")
	if i < 0 {
		t.Fatal("README has no Layout section")
	}
	section := text[i+len("\n## Layout\n"):]
	if j := strings.Index(section, "\n## "); j >= 0 {
		section = section[:j]
	}
	row := regexp.MustCompile("(?m)^\\| ([^|]+) \\|")
	name := regexp.MustCompile("`([^`]+)`")
	var listed []string
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		for _, n := range name.FindAllStringSubmatch(m[1], -1) {
			listed = append(listed, n[1])
		}
	}
	var want []string
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		n := e.Name()
		switch {
		case e.IsDir() && !strings.HasPrefix(n, "."):
			want = append(want, n+"/")
		case filepath.Ext(n) == ".go" && !strings.HasSuffix(n, "_test.go"), n == "ops.spec":
			want = append(want, n)
		}
	}
	slices.Sort(listed)
	slices.Sort(want)
	if diff := cmp.Diff(want, listed); diff != "" {
		t.Errorf("README's Layout table does not match the tree (-tree +README):\n%s", diff)
	}
}
