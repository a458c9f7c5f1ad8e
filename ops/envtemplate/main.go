// Command envtemplate renders a configuration file from a Go text/template
// and the environment, then, when a command follows "--", runs it in its
// place. It is the entrypoint of ops images whose program cannot take a
// setting from the environment itself: Debian's Alertmanager 0.25 reads its
// webhook URL only from its config file. The rendered file goes to a tmpfs,
// since the image's root filesystem is read-only.
//
//	envtemplate TEMPLATE OUT [-- COMMAND [ARG...]]
//
// In the template, {{env "NAME"}} is the variable's value ("" when unset).
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"text/template"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "envtemplate:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 || (len(args) > 2 && (args[2] != "--" || len(args) == 3)) {
		return errors.New("usage: envtemplate TEMPLATE OUT [-- COMMAND [ARG...]]")
	}
	if err := render(args[0], args[1]); err != nil {
		return err
	}
	if len(args) == 2 {
		return nil
	}
	cmd, err := exec.LookPath(args[3])
	if err != nil {
		return err
	}
	return syscall.Exec(cmd, args[3:], os.Environ())
}

// render writes the template at tmplPath, executed with the environment, to
// out (readable by this user only: it may hold secrets).
func render(tmplPath, out string) error {
	t, err := template.New("").Funcs(template.FuncMap{"env": os.Getenv}).
		Option("missingkey=error").ParseFiles(tmplPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		return err
	}
	// A fresh file each start (a restarted container keeps its tmpfs).
	if err := os.Remove(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := t.ExecuteTemplate(f, t.Templates()[0].Name(), nil); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", tmplPath, err)
	}
	return f.Close()
}
