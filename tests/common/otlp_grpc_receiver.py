"""A real OTLP/gRPC receiver for the exporter tests: grpcio serving the collector's TraceService
and MetricsService from the opentelemetry-proto stubs (scripts/requirements-test.txt).

Usage: otlp_grpc_receiver.py OUT_DIR MODE
  MODE ok       accept every export
       partial  accept, answering a partial success (2 spans / 3 data points rejected)
       hang     never answer (the exporter's timeout must give up)
       tls      accept, over TLS with tests/fixtures/otlp/collector.pem (signed by ca.pem)

It binds a free loopback port and writes it to OUT_DIR/port once serving. Each export request
is written as OUT_DIR/<seq>.<traces|metrics>.pb (the request re-serialised, decoded by the
Rust test with prost) and OUT_DIR/<seq>.<traces|metrics>.json (its metadata), the .json last,
so a test that sees the .json can read both.
"""

import json
import os
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

OUT, MODE = sys.argv[1], sys.argv[2]
SEQ = [0]
LOCK = threading.Lock()


def record(kind, request, context):
    with LOCK:
        SEQ[0] += 1
        seq = SEQ[0]
    base = os.path.join(OUT, f"{seq:04d}.{kind}")
    with open(base + ".pb", "wb") as f:
        f.write(request.SerializeToString())
    meta = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
    with open(base + ".json.tmp", "w") as f:
        json.dump(meta, f)
    os.rename(base + ".json.tmp", base + ".json")


def answer(context):
    if MODE == "hang":
        # Longer than any exporter timeout in the tests; the test process kills us anyway.
        time.sleep(120)


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        answer(context)
        record("traces", request, context)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if MODE == "partial":
            response.partial_success.rejected_spans = 2
            response.partial_success.error_message = "2 spans too old for this test collector"
        return response


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        answer(context)
        record("metrics", request, context)
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        if MODE == "partial":
            response.partial_success.rejected_data_points = 3
            response.partial_success.error_message = "3 points refused by this test collector"
        return response


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    if MODE == "tls":
        fixtures = os.path.join(os.path.dirname(__file__), "..", "fixtures", "otlp")
        with open(os.path.join(fixtures, "collector.key"), "rb") as f:
            key = f.read()
        with open(os.path.join(fixtures, "collector.pem"), "rb") as f:
            cert = f.read()
        credentials = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with open(os.path.join(OUT, "port.tmp"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(OUT, "port.tmp"), os.path.join(OUT, "port"))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
