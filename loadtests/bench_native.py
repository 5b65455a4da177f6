"""ns/op of both native backends, and the speedup of the compiled one.

    .venv/bin/python loadtests/bench_native.py [--quick]
"""
import sys
import time

from native import _httpparse_c, _httpparse_py, _requestinfo_c, _requestinfo_py

REQUEST_HEAD = (
    b"GET /api/v1/namespaces/default/pods?limit=500 HTTP/1.1\r\n"
    b"Host: gateway.example.com:8443\r\n"
    b"User-Agent: kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07\r\n"
    b"Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
    b"g=meta.k8s.io,application/json\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0"
    b"dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl\r\n"
    b"Kubectl-Command: kubectl get\r\n"
    b"Kubectl-Session: 0f3c1f5e-2a43-4d0e-9a5e-7f1c3b2e6d11\r\n"
    b"X-Request-Id: 6b1c2a4e-8f0d-4b7a-9c3e-2d5f7a9b1c3e\r\n\r\n"
)
RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Audit-Id: 4b0c6f1e-7d2a-4e9b-8c1f-3a5d7e9b2c4f\r\n"
    b"Cache-Control: no-cache, private\r\n"
    b"Content-Type: application/json\r\n"
    b"X-Kubernetes-Pf-Flowschema-Uid: 8e3f1a2b-4c5d-6e7f-8a9b-0c1d2e3f4a5b\r\n"
    b"X-Kubernetes-Pf-Prioritylevel-Uid: 1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d\r\n"
    b"Date: Sun, 23 Nov 2026 08:00:00 GMT\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
CHUNKED = b"".join(b"%x\r\n%s\r\n" % (4096, b"x" * 4096) for _ in range(16)) + b"0\r\n\r\n"
CHUNKED_PIECES = [CHUNKED[i:i + 8192] for i in range(0, len(CHUNKED), 8192)]
REQUEST_PATHS = [
    ("GET", "/api/v1/namespaces/default/pods", "limit=500"),
    ("GET", "/api/v1/namespaces/default/pods/web-0", ""),
    ("GET", "/apis/apps/v1/namespaces/prod/deployments", "resourceVersion=12345&watch=true"),
    ("PATCH", "/apis/apps/v1/namespaces/prod/deployments/api/scale", "fieldManager=kubectl"),
    ("GET", "/version", "timeout=32s"),
]


def ns_per_op(call, seconds: float) -> float:
    loops = 1
    while True:  # grow until one timing run is long enough to trust
        start = time.perf_counter_ns()
        for _ in range(loops):
            call()
        elapsed = time.perf_counter_ns() - start
        if elapsed > seconds * 1e9 / 5:
            break
        loops *= 2
    best = elapsed / loops
    for _ in range(4):
        start = time.perf_counter_ns()
        for _ in range(loops):
            call()
        best = min(best, (time.perf_counter_ns() - start) / loops)
    return best


def cases(hp, ri):
    def chunked_body():
        decoder = hp.ChunkedDecoder()
        for piece in CHUNKED_PIECES:
            decoder.feed(piece)
        assert decoder.done

    def request_paths():
        for args in REQUEST_PATHS:
            ri.parse_request_info(*args)

    return {
        f"request head ({len(REQUEST_HEAD)} B)": lambda: hp.parse_request_head(REQUEST_HEAD),
        f"response head ({len(RESPONSE_HEAD)} B)": lambda: hp.parse_response_head(RESPONSE_HEAD),
        "chunked body (64 KiB in 8 KiB pieces)": chunked_body,
        f"parse_request_info ({len(REQUEST_PATHS)} paths)": request_paths,
    }


def main() -> None:
    seconds = 0.1 if "--quick" in sys.argv else 0.5
    python = cases(_httpparse_py, _requestinfo_py)
    cython = cases(_httpparse_c, _requestinfo_c)
    print(f"{'case':42} {'python ns/op':>13} {'cython ns/op':>13} {'speedup':>8}")
    for name in python:
        slow, fast = ns_per_op(python[name], seconds), ns_per_op(cython[name], seconds)
        print(f"{name:42} {slow:13.0f} {fast:13.0f} {slow / fast:7.1f}x")


if __name__ == "__main__":
    main()
