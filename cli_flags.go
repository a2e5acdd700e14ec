package main

// CLI options and flag parsing: the global flags, flags and positional
// arguments mixed in any order, and list-valued flags.

import (
	"flag"
	"io"
	"strings"
)

// cliOptions are the global flags: where and how to connect, and --json.
type cliOptions struct {
	addr, token                   string
	tls, insecure                 bool
	caCert, clientCert, clientKey string
	json                          bool
}

// cliGlobalFlags maps each global flag name to whether it is boolean.
var cliGlobalFlags = map[string]bool{
	"addr": false, "token": false, "tls": true, "ca-cert": false,
	"client-cert": false, "client-key": false, "insecure": true, "json": true,
}

func (o *cliOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.addr, "addr", o.addr, "server `ADDR`ess (env RSTMDB_ADDR)")
	fs.StringVar(&o.token, "token", o.token, "bearer `TOKEN` sent with AUTH after connecting (env RSTMDB_TOKEN)")
	fs.BoolVar(&o.tls, "tls", o.tls, "connect with TLS")
	fs.StringVar(&o.caCert, "ca-cert", o.caCert, "PEM `FILE` of CA certificates to trust (implies --tls)")
	fs.StringVar(&o.clientCert, "client-cert", o.clientCert, "PEM client certificate `FILE` (implies --tls)")
	fs.StringVar(&o.clientKey, "client-key", o.clientKey, "PEM client key `FILE` (implies --tls)")
	fs.BoolVar(&o.insecure, "insecure", o.insecure, "do not verify the server's certificate (implies --tls)")
	fs.BoolVar(&o.json, "json", o.json, "print results as compact JSON, one object per line")
}

// cliPrintGlobals prints the global flags, one a line.
func cliPrintGlobals(w io.Writer) {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	var o cliOptions
	o.register(fs)
	cliPrintFlags(w, fs, nil)
}

// cliPrintFlags prints fs's flags except those in skip.
func cliPrintFlags(w io.Writer, fs *flag.FlagSet, skip map[string]bool) {
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		if skip[f.Name] {
			return
		}
		arg, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		}
		if arg != "" {
			arg = " " + strings.ToUpper(arg)
		}
		lines = append(lines, "  "+dash+f.Name+arg+"\t"+usage)
	})
	cliTabs(w, lines)
}

// cliFlagName is the name of a flag argument: "--addr=x" -> "addr".
func cliFlagName(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if k := strings.IndexByte(a, '='); k >= 0 {
		a = a[:k]
	}
	return a
}

// cliParse parses fs from args where flags and positional arguments may
// be mixed in any order ("--" ends the flags); it returns the positionals.
func cliParse(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		if strings.Contains(a, "=") {
			continue
		}
		f := fs.Lookup(cliFlagName(a))
		if f == nil {
			continue // fs.Parse reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if err := fs.Parse(flags); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, &cliUsageError{err.Error()}
	}
	return append(fs.Args(), pos...), nil
}

// cliList is a flag holding a list of strings: comma-separated, repeatable.
type cliList []string

func (l *cliList) String() string { return strings.Join(*l, ",") }

func (l *cliList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
