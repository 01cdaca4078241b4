// Reads secrets the way a JavaScript app does: with Dapr's JavaScript SDK (@dapr/dapr), over gRPC
// and over HTTP to daprd.
//
//   DAPR_HTTP_PORT=3500 DAPR_GRPC_PORT=50001 node app.js STORE KEY... [--metadata K=V]...
//
// It prints one JSON object in the shape examples/read_secrets.py prints:
// {"grpc": {"get": {KEY: ANSWER}, "bulk": ANSWER}, "http": {...}}, where ANSWER is {"data": ...}
// or, when the SDK throws, what its error carries: {"code": <gRPC status code>, "details": <message>}
// over gRPC, {"status": <HTTP status>, "body": <daprd's error body>} over HTTP. The end-to-end tests
// (tests/test_e2e_sdk_apps.py) hold it to the same expectations as the Python and Go apps.
"use strict";

const { DaprClient, CommunicationProtocolEnum, LogLevel } = require("@dapr/dapr");

// gRPC's status codes by number (the gRPC spec's names, as the Python SDK prints them).
const GRPC_CODES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

function parse(argv) {
  const [store, ...rest] = argv;
  const keys = [];
  const metadata = {};
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === "--metadata" && i + 1 < rest.length) {
      const [name, ...value] = rest[++i].split("=");
      metadata[name] = value.join("=");
    } else {
      keys.push(rest[i]);
    }
  }
  return { store, keys, metadata };
}

function grpcError(error) {
  // A ConnectError (the SDK's gRPC transport): the gRPC status code and daprd's message.
  if (error && typeof error.code === "number" && "rawMessage" in error) {
    return { code: GRPC_CODES[error.code] ?? String(error.code), details: error.rawMessage };
  }
  throw error;
}

function httpError(error) {
  // The HTTP client throws Error(JSON.stringify({error, error_msg, status})).
  let parsed;
  try {
    parsed = JSON.parse(error.message);
  } catch {
    throw error;
  }
  let body = parsed.error_msg;
  try {
    body = JSON.parse(body);
  } catch {
    // not JSON: kept as text (daprd's "invalid api token" is text/plain)
  }
  return { status: parsed.status, body };
}

async function read(protocol, { store, keys, metadata }) {
  const grpc = protocol === CommunicationProtocolEnum.GRPC;
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: grpc ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT,
    communicationProtocol: protocol,
    logger: { level: LogLevel.Error },
  });
  const failed = grpc ? grpcError : httpError;
  // What the SDK takes as request metadata: the HTTP client appends a query string to `get`; the gRPC
  // client's `get` takes the argument and does not send it, and neither `getBulk` takes any.
  const query = Object.entries(metadata)
    .map(([k, v]) => `metadata.${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join("&");
  const out = { get: {}, bulk: null };
  for (const key of keys) {
    try {
      out.get[key] = { data: await client.secret.get(store, key, query) };
    } catch (error) {
      out.get[key] = failed(error);
    }
  }
  try {
    out.bulk = { data: await client.secret.getBulk(store) };
  } catch (error) {
    out.bulk = failed(error);
  }
  await client.stop();
  return out;
}

async function main() {
  const request = parse(process.argv.slice(2));
  if (!request.store || request.keys.length === 0) {
    process.stderr.write("usage: node app.js STORE KEY... [--metadata K=V]...\n");
    process.exit(2);
  }
  const out = {
    grpc: await read(CommunicationProtocolEnum.GRPC, request),
    http: await read(CommunicationProtocolEnum.HTTP, request),
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((error) => {
  process.stderr.write(`app.js: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
