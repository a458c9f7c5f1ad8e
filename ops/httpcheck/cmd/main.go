// Command httpcheck is the health check of the ops images, which are built
// on scratch and so have no curl: it GETs one URL and exits 0 only on a 200
// within two seconds (package httpcheck).
//
//	httpcheck http://127.0.0.1:9090/-/ready
package main

import (
	"context"
	"fmt"
	"os"

	"sitekit/ops/httpcheck"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: httpcheck URL")
		os.Exit(2)
	}
	if err := httpcheck.Check(context.Background(), os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "httpcheck:", err)
		os.Exit(1)
	}
}
