"""kubectl-like traffic mixes through the AccessPoint gateway, for locust.

Against the quick-start stack (`accesspoint up --state-dir DIR`), whose kubeconfigs and
`apctl.yaml` carry every credential used here:

    accesspoint up --state-dir .state &
    locust -f loadtests/locustfile.py --state-dir .state --headless -u 21 -r 7 -t 60s --csv out/run

Scenarios, one user class each (the request names start with the scenario; users are spread
4:2:2:2 over the first four, and one operator):
- `read`     bob (token): discovery, list, get, as `kubectl get` does; a write that policy denies.
- `watch`    bob (token): list, then a watch held open for --watch-seconds, ended by the server.
- `cd-sync`  alice (client certificate): a burst of apply/patch per object like a CD sync.
- `exec`     alice: `kubectl exec` over WebSocket v5.channel.k8s.io, one short command per session.
- `policy`   the operator through the control-plane gRPC API while the traffic runs: role and
             binding churn (each change a new snapshot revision for the gateway), and a token
             issued, used, revoked, then refused once the fleet reports the revocation applied.

Answers the scenario expects (404 before a create, 403 for the denied write, 401 after the
revocation) count as successes; anything else is a failure. At the end a per-scenario report
(requests, error rate, p50/p95/p99) goes to stdout, and the exit code is non-zero when any request
failed or any scenario never completed a request.
"""
from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import grpc.experimental.gevent as grpc_gevent
import requests
import yaml
from locust import HttpUser, User, between, events, task
from locust.env import Environment
from locust.exception import RescheduleTask
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, RejectConnection, RejectData,
                            Request as WsRequest)

from controlplane.apctl.connection import Client, load_settings
from controlplane.api.v1 import bindings_pb2, fleet_pb2, roles_pb2, tokens_pb2

grpc_gevent.init_gevent()   # locust runs on gevent: gRPC calls must yield to the other users

SCENARIOS = ("read", "watch", "cd-sync", "exec", "policy")
KUBECTL_HEADERS = {"User-Agent": "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07 (locust)"}
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
DISCOVERY_ACCEPT = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")
PODS = "/api/v1/namespaces/default/pods"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
FLEET_WAIT_SECONDS = 30


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--state-dir", env_var="LOCUST_STATE_DIR", default=".state",
                        help="state directory of `accesspoint up` (kubeconfigs, apctl.yaml)")
    parser.add_argument("--watch-seconds", env_var="LOCUST_WATCH_SECONDS", type=int, default=30,
                        help="how long each watch is held open (the server ends it: timeoutSeconds)")
    parser.add_argument("--burst", env_var="LOCUST_BURST", type=int, default=5,
                        help="objects applied per CD sync")


# -- the stack's credentials ------------------------------------------------------------------------

@dataclass(frozen=True)
class Stack:
    base_url: str            # https://HOST:PORT/clusters/NAME
    ca_file: str             # the gateway's CA
    admin_cert: tuple[str, str]
    readonly_token: str
    apctl_config: str

    @property
    def gateway(self) -> tuple[str, int, str]:
        parts = urlsplit(self.base_url)
        return parts.hostname, parts.port, parts.path


def _kubeconfig(path: Path) -> tuple[str, bytes, dict]:
    config = yaml.safe_load(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    return cluster["server"], base64.b64decode(cluster["certificate-authority-data"]), config["users"][0]["user"]


def _private_file(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.touch(mode=0o600)
    path.write_bytes(data)
    return str(path)


def load_stack(state_dir: Path, scratch: Path) -> Stack:
    """Reads the quick start's kubeconfigs; PEM data goes to 0600 files in `scratch` for TLS."""
    server, ca_pem, admin = _kubeconfig(state_dir / "kubeconfig")
    _, _, readonly = _kubeconfig(state_dir / "readonly.kubeconfig")
    cert = _private_file(scratch, "alice.crt", base64.b64decode(admin["client-certificate-data"]))
    key = _private_file(scratch, "alice.key", base64.b64decode(admin["client-key-data"]))
    return Stack(base_url=server, ca_file=_private_file(scratch, "gateway-ca.crt", ca_pem), admin_cert=(cert, key),
                 readonly_token=readonly["token"], apctl_config=str(state_dir / "apctl.yaml"))


STACK: Stack | None = None
_SCRATCH: Path | None = None


@events.init.add_listener
def _load(environment: Environment, **_) -> None:
    global STACK, _SCRATCH
    options = environment.parsed_options
    if options is None:
        return
    _SCRATCH = Path(tempfile.mkdtemp(prefix="accesspoint-locust-"))
    STACK = load_stack(Path(options.state_dir), _SCRATCH)
    for user_class in (KubectlReader, Watcher, CdSync):
        user_class.host = STACK.base_url


# -- helpers ----------------------------------------------------------------------------------------

def describe(response) -> str:
    """Status code and, for a Kubernetes Status, its reason and message."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}: {response.text[:200]!r}"
    if isinstance(body, dict) and body.get("kind") == "Status":
        return f"{response.status_code} {body.get('reason')}: {body.get('message')}"
    return str(response.status_code)


def expect(response, *codes: int, status_reason: str | None = None) -> bool:
    """Marks the response a success only with one of `codes` (and, when given, a Status of that reason)."""
    if response.status_code not in codes:
        response.failure(f"expected {codes}, got {describe(response)}")
        return False
    if status_reason is not None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("kind") != "Status" or body.get("reason") != status_reason:
            response.failure(f"expected a Status {status_reason}, got {response.text[:200]!r}")
            return False
    response.success()
    return True


class KubectlHttpUser(HttpUser):
    abstract = True
    token_user = True   # bob's token; False: alice's client certificate

    def on_start(self) -> None:
        self.client.trust_env = False   # no proxy and no CA bundle from the environment: the gateway's CA only
        self.client.verify = STACK.ca_file
        self.client.headers.update(KUBECTL_HEADERS)
        if self.token_user:
            self.client.headers["Authorization"] = f"Bearer {STACK.readonly_token}"
        else:
            self.client.cert = STACK.admin_cert

    def get(self, path: str, name: str, *codes: int, **kwargs):
        with self.client.get(path, name=name, catch_response=True, **kwargs) as response:
            expect(response, *(codes or (200,)))
        return response


# -- scenarios --------------------------------------------------------------------------------------

class KubectlReader(KubectlHttpUser):
    """`kubectl get` as people run it: discovery first, then lists and gets."""
    weight = 4
    wait_time = between(0.05, 0.5)

    @task(1)
    def discovery(self) -> None:
        self.get("/version?timeout=32s", "read: GET /version")
        for path in ("/api", "/apis"):
            self.get(f"{path}?timeout=32s", f"read: GET {path}", headers={"Accept": DISCOVERY_ACCEPT})
        self.get("/api/v1?timeout=32s", "read: GET /api/v1")

    @task(4)
    def list_pods(self) -> None:
        self.get(f"{PODS}?limit=500", "read: list pods", headers={"Accept": TABLE_ACCEPT})

    @task(4)
    def get_pod(self) -> None:
        self.get(f"{PODS}/web-0", "read: get pod")

    @task(2)
    def list_configmaps(self) -> None:
        self.get(f"{CONFIGMAPS}?limit=500", "read: list configmaps", headers={"Accept": TABLE_ACCEPT})

    @task(1)
    def denied_delete(self) -> None:
        """bob is a viewer: the gateway itself must answer 403 with a Status."""
        with self.client.delete(f"{PODS}/web-0", name="read: delete pod (denied)", catch_response=True,
                                json={"propagationPolicy": "Background"}) as response:
            expect(response, 403, status_reason="Forbidden")


class Watcher(KubectlHttpUser):
    """`kubectl get pods -w`: a list for the resourceVersion, then a watch held open until the
    server ends it after --watch-seconds; it must end cleanly (a whole chunked stream)."""
    weight = 2
    wait_time = between(0.1, 1.0)

    @task
    def watch_pods(self) -> None:
        listed = self.get(PODS, "watch: list pods")
        if listed.status_code != 200:
            return
        version = listed.json()["metadata"]["resourceVersion"]
        seconds = self.environment.parsed_options.watch_seconds
        started = time.perf_counter()
        events_seen = 0
        with self.client.get(f"{PODS}?watch=true&resourceVersion={version}&timeoutSeconds={seconds}",
                             name="watch: open", stream=True, catch_response=True) as response:
            if not expect(response, 200):
                return
            try:
                for line in response.iter_lines():
                    if line:
                        event = json.loads(line)
                        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                            raise ValueError(f"unexpected watch event {line[:200]!r}")
                        events_seen += 1
                exception = None
            except Exception as exc:     # a cut stream, a torn chunk, a bad event: all unexpected
                exception = exc
        held = (time.perf_counter() - started) * 1000
        if exception is None and held < seconds * 1000 * 0.5:
            exception = RuntimeError(f"watch ended after {held:.0f} ms, long before its {seconds} s")
        self.environment.events.request.fire(
            request_type="WATCH", name="watch: held to its end", response_time=held, response_length=events_seen,
            exception=exception, context={})


class CdSync(KubectlHttpUser):
    """A CD system syncing an application: for each object, GET it, create it when it is missing
    (404 expected then) or strategic-merge patch it, then a server-side apply; now and then the
    whole application is pruned."""
    token_user = False
    weight = 2
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        super().on_start()
        self.app = f"locust-{uuid.uuid4().hex[:8]}"
        self.syncs = 0

    def _names(self) -> list[str]:
        return [f"{self.app}-{index}" for index in range(self.environment.parsed_options.burst)]

    @task
    def sync(self) -> None:
        self.syncs += 1
        self.get("/openapi/v3?timeout=32s", "cd-sync: GET /openapi/v3")
        for name in self._names():
            current = self.get(f"{CONFIGMAPS}/{name}", "cd-sync: get object", 200, 404)
            desired = {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": "default", "labels": {"app": self.app}},
                       "data": {"sync": str(self.syncs)}}
            if current.status_code == 404:
                with self.client.post(f"{CONFIGMAPS}?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
                                      json=desired, name="cd-sync: create", catch_response=True) as response:
                    expect(response, 201)
            elif current.status_code == 200:
                with self.client.patch(f"{CONFIGMAPS}/{name}?fieldManager=kubectl-client-side-apply",
                                       data=json.dumps({"data": {"sync": str(self.syncs)}}),
                                       headers={"Content-Type": "application/strategic-merge-patch+json"},
                                       name="cd-sync: strategic-merge patch", catch_response=True) as response:
                    expect(response, 200)
            desired["data"]["applied"] = "server-side"
            with self.client.patch(f"{CONFIGMAPS}/{name}?fieldManager=locust-cd&fieldValidation=Strict&force=true",
                                   data=yaml.safe_dump(desired), headers={"Content-Type": "application/apply-patch+yaml"},
                                   name="cd-sync: server-side apply", catch_response=True) as response:
                expect(response, 200, 201)
        if self.syncs % 3 == 0:
            self.prune()

    def prune(self) -> None:
        for name in self._names():
            with self.client.delete(f"{CONFIGMAPS}/{name}", json={"propagationPolicy": "Background"},
                                    name="cd-sync: delete", catch_response=True) as response:
                expect(response, 200, 404)

    def on_stop(self) -> None:
        self.prune()


class ExecSession:
    """One `kubectl exec POD -c CONTAINER -- COMMAND` over WebSocket v5.channel.k8s.io, as kubectl
    sends it: a new TLS connection without ALPN, HTTP/1.1 upgrade, channel-prefixed binary messages."""

    def __init__(self, stack: Stack, timeout: float = 20.0):
        self.stack, self.timeout = stack, timeout

    def run(self, pod: str, container: str, argv: list[str]) -> tuple[bytes, dict]:
        host, port, prefix = self.stack.gateway
        context = ssl.create_default_context(cafile=self.stack.ca_file)
        context.load_cert_chain(*self.stack.admin_cert)
        query = "&".join([*(f"command={arg}" for arg in argv), f"container={container}", "stderr=true", "stdout=true"])
        ws = WSConnection(ConnectionType.CLIENT)
        with socket.create_connection((host, port), timeout=self.timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as sock:
            sock.sendall(ws.send(WsRequest(host=f"{host}:{port}", target=f"{prefix}{PODS}/{pod}/exec?{query}",
                                           subprotocols=["v5.channel.k8s.io"],
                                           extra_headers=[(b"user-agent", KUBECTL_HEADERS["User-Agent"].encode())])))
            stdout, status, closed = bytearray(), None, False
            deadline = time.monotonic() + self.timeout
            while not closed:
                if time.monotonic() > deadline:
                    raise TimeoutError("exec session did not end")
                data = sock.recv(65536)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        if event.subprotocol != "v5.channel.k8s.io":
                            raise RuntimeError(f"upgrade accepted with subprotocol {event.subprotocol!r}")
                    elif isinstance(event, (RejectConnection, RejectData)):
                        raise RuntimeError(f"upgrade refused: {getattr(event, 'status_code', '')} "
                                           f"{getattr(event, 'data', b'')[:200]!r}")
                    elif isinstance(event, BytesMessage):
                        payload = bytes(event.data)
                        if payload[:1] == b"\x01":
                            stdout += payload[1:]
                        elif payload[:1] == b"\x03":
                            status = json.loads(payload[1:])
                    elif isinstance(event, CloseConnection):
                        sock.sendall(ws.send(event.response()))
                        closed = True
                if not data:
                    closed = True
        if status is None:
            raise RuntimeError("the session ended without a status on the error channel")
        return bytes(stdout), status


class ExecChurn(User):
    """Short exec sessions one after another, each on its own connection."""
    weight = 2
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.session = ExecSession(STACK)

    @task
    def exec_echo(self) -> None:
        word = f"locust-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        exception, length = None, 0
        try:
            stdout, status = self.session.run("web-0", "app", ["echo", word])
            length = len(stdout)
            if status.get("status") != "Success" or stdout != f"{word}\n".encode():
                raise RuntimeError(f"exec: stdout {stdout[:100]!r}, status {status}")
        except Exception as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="WS", name="exec: echo", response_time=(time.perf_counter() - started) * 1000,
            response_length=length, exception=exception, context={})


class PolicyChurn(User):
    """The operator changes policy while traffic runs. Role and binding churn touches no one who is
    sending traffic; the token cycle checks that a revocation is enforced once the fleet says so."""
    wait_time = between(0.5, 2.0)
    fixed_count = 1

    def on_start(self) -> None:
        self.api = Client(load_settings(STACK.apctl_config))
        self.name = f"locust-churn-{uuid.uuid4().hex[:8]}"
        self.http = None

    def on_stop(self) -> None:
        self.api.close()

    def call(self, name: str, method, request, timeout: float = 15.0):
        """One gRPC call, reported as a request; raises on failure so the task stops there."""
        started = time.perf_counter()
        exception, answer = None, None
        try:
            answer = self.api.call(method, request, timeout=timeout)
        except grpc.RpcError as exc:
            exception = RuntimeError(f"{exc.code().name}: {exc.details()}")
        self.environment.events.request.fire(
            request_type="gRPC", name=f"policy: {name}", response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=exception, context={})
        if exception is not None:
            raise RescheduleTask()  # the cycle stops here; the failure is already reported
        return answer

    def wait_for_fleet(self, revision: int) -> None:
        request = fleet_pb2.WaitForRevisionRequest(revision=revision)
        request.timeout.FromSeconds(FLEET_WAIT_SECONDS)
        self.call("WaitForRevision", self.api.fleet.WaitForRevision, request, timeout=FLEET_WAIT_SECONDS + 5)

    @task
    def cycle(self) -> None:
        self.role_and_binding_churn()
        self.token_revocation()

    def role_and_binding_churn(self) -> None:
        rule = roles_pb2.Rule(verbs=["get", "list"], resources=["configmaps"], api_groups=[""])
        self.call("CreateRole", self.api.roles.CreateRole, roles_pb2.CreateRoleRequest(
            role=roles_pb2.Role(name=self.name, rules=[rule])))
        binding = self.call("CreateBinding", self.api.bindings.CreateBinding, bindings_pb2.CreateBindingRequest(
            binding=bindings_pb2.Binding(name=self.name, role=self.name,
                                         subjects=[bindings_pb2.Subject(kind="group", name=self.name)],
                                         clusters=bindings_pb2.ClusterSelector(names=["*"]))))
        self.wait_for_fleet(binding.revision)
        self.call("DeleteBinding", self.api.bindings.DeleteBinding, bindings_pb2.DeleteBindingRequest(name=self.name))
        self.call("DeleteRole", self.api.roles.DeleteRole, roles_pb2.DeleteRoleRequest(name=self.name))

    def token_revocation(self) -> None:
        issued = self.call("IssueToken", self.api.tokens.IssueToken, tokens_pb2.IssueTokenRequest(
            user=f"{self.name}-user", groups=["viewers"], description="locust revocation cycle"))
        self.wait_for_fleet(issued.token.revision)
        self.gateway_get(issued.secret, "policy: GET with the new token", 200)
        revoked = self.call("RevokeToken", self.api.tokens.RevokeToken, tokens_pb2.RevokeTokenRequest(
            id=issued.token.id, reason="locust revocation cycle"))
        self.wait_for_fleet(revoked.revision)
        self.gateway_get(issued.secret, "policy: GET with the revoked token", 401)

    def gateway_get(self, token: str, name: str, code: int) -> None:
        if self.http is None:
            self.http = requests.Session()
            self.http.trust_env = False
            self.http.verify = STACK.ca_file
        started = time.perf_counter()
        exception = None
        try:
            response = self.http.get(f"{STACK.base_url}{PODS}/web-0", timeout=15,
                                     headers={**KUBECTL_HEADERS, "Authorization": f"Bearer {token}"})
            if response.status_code != code:
                exception = RuntimeError(f"expected {code}, got {describe(response)}")
        except OSError as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="GET", name=name, response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=exception, context={})


# -- the report -------------------------------------------------------------------------------------

def _percentile(histogram: dict[int, int], fraction: float) -> str:
    """From a locust response-time histogram (rounded ms → count)."""
    wanted, seen = fraction * sum(histogram.values()), 0
    for bucket, hits in sorted(histogram.items()):
        seen += hits
        if seen >= wanted:
            return f"{bucket:.0f}"
    return "-"


def scenario_report(environment: Environment) -> tuple[str, bool]:
    """Per-scenario requests, error rate and latency; False when something failed or never ran."""
    rows, healthy = [], True
    for scenario in SCENARIOS:
        entries = [e for e in environment.stats.entries.values() if e.name.startswith(f"{scenario}: ")]
        count = sum(e.num_requests for e in entries)
        failures = sum(e.num_failures for e in entries)
        if count == 0 or failures:
            healthy = False
        histogram: dict[int, int] = {}
        for entry in (e for e in entries if e.method != "WATCH"):   # a watch's hold time is no latency
            for bucket, hits in entry.response_times.items():
                histogram[bucket] = histogram.get(bucket, 0) + hits
        rate = f"{100 * failures / count:.2f}%" if count else "did not run"
        rows.append(f"| {scenario:8} | {count:8} | {failures:8} | {rate:>11} | {_percentile(histogram, 0.5):>6} "
                    f"| {_percentile(histogram, 0.95):>6} | {_percentile(histogram, 0.99):>6} |")
    header = ["| scenario | requests | failures | error rate  | p50 ms | p95 ms | p99 ms |",
              "|----------|----------|----------|-------------|--------|--------|--------|"]
    return "\n".join(header + rows), healthy


@events.quitting.add_listener
def _report(environment: Environment, **_) -> None:
    table, healthy = scenario_report(environment)
    print("\nAccessPoint traffic mix, per scenario (latency per request; watch hold times excluded):")
    print(table, flush=True)
    if not healthy:
        environment.process_exit_code = 1
    if _SCRATCH is not None:
        shutil.rmtree(_SCRATCH, ignore_errors=True)
