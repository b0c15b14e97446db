#!/usr/bin/env python3
"""A real OTLP trace receiver, for braid's tests and for trying the export.

Serves OTLP/gRPC (opentelemetry.proto.collector.trace.v1.TraceService/Export)
and OTLP/HTTP with protobuf (POST /v1/traces) on 127.0.0.1, decodes requests
with the official OpenTelemetry protobuf definitions (opentelemetry-proto),
and appends every span it receives to --out as one JSON line:

  {"trace_id", "span_id", "parent_span_id", "name", "kind", "start_unix_nano",
   "end_unix_nano", "attributes": {...}, "status_code", "status_message",
   "flags", "links": [{"trace_id", "span_id", "attributes"}], "resource": {...},
   "scope"}

Usage: otlp-receiver.py --out spans.jsonl --ports-file ports.txt
(the ports file gets `grpc=PORT` and `http=PORT` once both listen).
Needs: pip install opentelemetry-proto grpcio (tests/requirements.txt pins them).
"""

import argparse
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

write_lock = threading.Lock()


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def record(request, out_path):
    lines = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                    "start_unix_nano": span.start_time_unix_nano,
                    "end_unix_nano": span.end_time_unix_nano,
                    "attributes": attributes(span.attributes),
                    "status_code": trace_pb2.Status.StatusCode.Name(span.status.code),
                    "status_message": span.status.message,
                    "flags": span.flags,
                    "links": [{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                               "attributes": attributes(link.attributes)}
                              for link in span.links],
                    "resource": resource,
                    "scope": ss.scope.name,
                }))
    with write_lock, open(out_path, "a") as f:
        for line in lines:
            f.write(line + "\n")


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out_path):
        self.out_path = out_path

    def Export(self, request, context):
        record(request, self.out_path)
        return trace_service_pb2.ExportTraceServiceResponse()


def http_handler(out_path):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            except Exception as e:  # a malformed request is the client's bug: say so
                self.send_error(400, str(e))
                return
            record(request, out_path)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON-lines file the spans are appended to")
    parser.add_argument("--ports-file", required=True, help="where to write grpc=PORT and http=PORT")
    args = parser.parse_args()
    open(args.out, "a").close()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(args.out), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    http = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(args.out))
    threading.Thread(target=http.serve_forever, daemon=True).start()

    tmp = args.ports_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"grpc={grpc_port}\nhttp={http.server_address[1]}\n")
    import os
    os.replace(tmp, args.ports_file)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
