// Package conformance runs Dapr's own secret-store conformance suite (components-contrib's
// tests/conformance/secretstores, ConformanceTests) against `secretbridge serve`, through the adapter daprd
// itself wraps a pluggable secret store's socket in (dapr's pkg/components/secretstores, NewGRPCSecretStore
// over pkg/components/pluggable). tests/test_conformance.py starts serve with the suite's data in one backend
// and runs this test once per backend; see README.md.
package conformance

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/dapr/components-contrib/secretstores"
	suite "github.com/dapr/components-contrib/tests/conformance/secretstores"
	pluggable "github.com/dapr/dapr/pkg/components/secretstores"
	"github.com/dapr/kit/logger"
)

// named gives the store the Component name daprd would. ConformanceTests initialises a store with
// properties only, while daprd always names the instance: the name travels with every call as the
// x-component-instance header, and secretbridge keeps one instance per name.
type named struct {
	secretstores.SecretStore
	name string
}

func (n named) Init(ctx context.Context, md secretstores.Metadata) error {
	md.Name = n.name
	return n.SecretStore.Init(ctx, md)
}

// TestSecretStoreConformance runs the suite once, against the socket and the Init metadata in
// SECRETBRIDGE_CONFORMANCE_SOCKET, SECRETBRIDGE_CONFORMANCE_INSTANCE and SECRETBRIDGE_CONFORMANCE_METADATA
// (a JSON object of strings).
func TestSecretStoreConformance(t *testing.T) {
	socket := os.Getenv("SECRETBRIDGE_CONFORMANCE_SOCKET")
	if socket == "" {
		t.Skip("SECRETBRIDGE_CONFORMANCE_SOCKET is not set: tests/test_conformance.py runs this test")
	}
	instance := os.Getenv("SECRETBRIDGE_CONFORMANCE_INSTANCE")
	var props map[string]string
	if err := json.Unmarshal([]byte(os.Getenv("SECRETBRIDGE_CONFORMANCE_METADATA")), &props); err != nil {
		t.Fatalf("SECRETBRIDGE_CONFORMANCE_METADATA is not a JSON object of strings: %v", err)
	}
	store := pluggable.NewGRPCSecretStore(logger.NewLogger("conformance"), socket)
	t.Cleanup(func() { _ = store.Close() })
	config := suite.NewTestConfig("secretstores.secretbridge/"+props["backend"], nil)
	suite.ConformanceTests(t, props, named{store, instance}, config)
}
