// Package components registers the built-in components of secretbridge's
// daprd build. get_daprd.py compiles this file in place of dapr's
// cmd/daprd/components/zz_notag.go (through `go build -overlay`), so the
// runtime carries exactly these components and no others; pluggable stores
// found through the sockets folder are registered by the runtime itself.
package components

import (
	"github.com/dapr/components-contrib/nameresolution/nameformat"
	"github.com/dapr/components-contrib/secretstores/azure/keyvault"
	"github.com/dapr/components-contrib/secretstores/local/file"
	"github.com/dapr/dapr/pkg/components/nameresolution"
	"github.com/dapr/dapr/pkg/components/secretstores"
)

func init() {
	// Component type secretstores.azure.keyvault: the store secretbridge stands in for.
	secretstores.DefaultRegistry.RegisterComponent(keyvault.NewAzureKeyvaultSecretStore, "azure.keyvault")
	// Component type secretstores.local.file: a store that needs no cloud.
	secretstores.DefaultRegistry.RegisterComponent(file.NewLocalSecretStore, "local.file")
	// Name resolution "nameformat": a resolver that touches no network, for a Configuration to name
	// (`secretbridge dev` does). Without one, standalone daprd asks for mdns, which this build leaves out
	// because it announces the app on the local network by multicast.
	nameresolution.DefaultRegistry.RegisterComponent(nameformat.NewResolver, "nameformat")
}
