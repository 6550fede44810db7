// Command tasklane runs the Tasklane task platform and talks to a running
// one. See README.md, or run `tasklane --help`.
package main

import "github.com/tasklane/tasklane/services/tasklane/cli"

func main() { cli.Main(nil) }
