// Command readsecrets reads secrets the way a Go app does: with Dapr's Go SDK, over gRPC to daprd.
//
//	DAPR_GRPC_PORT=50001 readsecrets STORE KEY... [--metadata K=V]...
//
// It prints one JSON object, the shape examples/read_secrets.py prints for its gRPC side:
// {"grpc": {"get": {KEY: ANSWER}, "bulk": ANSWER}}, where ANSWER is {"data": ...} or, when the
// SDK returns an error, {"code": <gRPC status code>, "details": <the error's text>}. The
// end-to-end tests (tests/test_e2e_sdk_apps.py) hold it to the same expectations as the Python app.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/status"
)

type answer struct {
	Data    any    `json:"data,omitempty"`
	Code    string `json:"code,omitempty"`
	Details string `json:"details,omitempty"`
}

func result(data any, err error) answer {
	if err != nil {
		// The SDK wraps the gRPC status ("error invoking service: %w"); FromError unwraps it.
		return answer{Code: status.Code(err).String(), Details: err.Error()}
	}
	return answer{Data: data}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: readsecrets STORE KEY... [--metadata K=V]...")
		os.Exit(2)
	}
	store, keys, metadata := os.Args[1], []string{}, map[string]string{}
	for args := os.Args[2:]; len(args) > 0; args = args[1:] {
		if args[0] == "--metadata" && len(args) > 1 {
			name, value, _ := strings.Cut(args[1], "=")
			metadata[name] = value
			args = args[1:]
			continue
		}
		keys = append(keys, args[0])
	}
	dapr.SetLogger(log.New(os.Stderr, "", 0)) // stdout is the JSON answer; the SDK logs to stdout by default
	client, err := dapr.NewClient()
	if err != nil {
		fmt.Fprintln(os.Stderr, "readsecrets:", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	gets := map[string]answer{}
	for _, key := range keys {
		data, err := client.GetSecret(ctx, store, key, metadata)
		if err == nil && data == nil {
			data = map[string]string{} // an empty secret: daprd sends an empty map
		}
		gets[key] = result(data, err)
	}
	bulk, err := client.GetBulkSecret(ctx, store, metadata)
	out := map[string]any{"grpc": map[string]any{"get": gets, "bulk": result(bulk, err)}}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "readsecrets:", err)
		os.Exit(1)
	}
}
