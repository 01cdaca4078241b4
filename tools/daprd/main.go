// Command daprd is the upstream Dapr sidecar, built with only the built-in
// components secretbridge's tests need (see components/secretstores.go).
// Pluggable component discovery is part of the runtime and always present.
package main

import "github.com/dapr/dapr/cmd/daprd/app"

func main() {
	app.Run()
}
