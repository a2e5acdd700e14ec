// Command gen generates ops_gen.go, the RCP command table, from ops.spec.
//
// It is run from the repository root by the //go:generate line in ops.go:
//
//	go run ./gen [-spec ops.spec] [-out ops_gen.go] [-openapi console/openapi.json]
//
// -openapi also writes the OpenAPI document of the spec's HTTP routes
// ("" skips it).
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	specPath := flag.String("spec", "ops.spec", "command table spec to read")
	outPath := flag.String("out", "ops_gen.go", "Go file to write")
	openapiPath := flag.String("openapi", "console/openapi.json", "OpenAPI document to write; empty: none")
	flag.Parse()
	err := run(*specPath, *outPath)
	if err == nil && *openapiPath != "" {
		err = runOpenAPI(*specPath, *openapiPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(specPath, outPath string) error {
	spec, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	out, err := generate(spec)
	if err != nil {
		var errs specErrors
		if errors.As(err, &errs) {
			var b bytes.Buffer
			for i, e := range errs {
				if i > 0 {
					b.WriteByte('\n')
				}
				fmt.Fprintf(&b, "%s:%d: %s", specPath, e.Line, e.Msg)
			}
			return errors.New(b.String())
		}
		return fmt.Errorf("%s: %v", specPath, err)
	}
	return writeFile(outPath, out)
}

// runOpenAPI writes the OpenAPI document of the spec's routes to outPath.
func runOpenAPI(specPath, outPath string) error {
	spec, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	out, err := generateOpenAPI(spec)
	if err != nil {
		return fmt.Errorf("%s: %v", specPath, err)
	}
	return writeFile(outPath, out)
}

// writeFile replaces outPath with out unless it holds out already.
func writeFile(outPath string, out []byte) error {
	if old, err := os.ReadFile(outPath); err == nil && bytes.Equal(old, out) {
		return nil // up to date; keep the file's mtime
	}
	// Write through a temporary file so that a failed run never leaves a
	// truncated file behind.
	tmp, err := os.CreateTemp(filepath.Dir(outPath), ".ops_gen-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), outPath)
}
