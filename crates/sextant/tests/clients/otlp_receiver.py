"""An OTLP/gRPC trace receiver (grpcio with the OpenTelemetry project's own
protos from opentelemetry-proto): what a collector does on its OTLP port.

Usage: otlp_receiver.py
Listens on 127.0.0.1, port 0; prints "listening PORT", then one JSON line
per span received: {"service": the resource's service.name, "name",
"trace_id", "span_id", "parent_span_id" (hex), "start", "end" (Unix
nanoseconds), "attributes" {key: value}, "events" [[name, time]]}.
Ends when stdin closes. The protos come from the directory in
$SEXTANT_OTLP_PROTO (see scripts/install-peers.sh), not from the older
copy xds-protos installs as the package `opentelemetry`: that directory is
put first on the package's path before anything of it is imported.
"""
import json
import os
import sys
from concurrent import futures

import grpc
import opentelemetry

opentelemetry.__path__.insert(0, os.path.join(os.environ["SEXTANT_OTLP_PROTO"], "opentelemetry"))

from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import (  # noqa: E402
    trace_service_pb2,
    trace_service_pb2_grpc,
)


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for rs in request.resource_spans:
            attrs = {a.key: value(a.value) for a in rs.resource.attributes}
            service = attrs.get("service.name")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    print(json.dumps({
                        "service": service,
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent_span_id": s.parent_span_id.hex(),
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": {a.key: value(a.value) for a in s.attributes},
                        "events": [[e.name, e.time_unix_nano] for e in s.events],
                    }), flush=True)
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    if "scope_spans" not in trace_pb2.ResourceSpans.DESCRIPTOR.fields_by_name:
        sys.exit(f"an OTLP 0.x trace_pb2 was imported ({trace_pb2.__file__}): run scripts/install-peers.sh")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
