"""nginx twice: as the fast upstream (static files over TLS, like an API server's GETs) and as
the reference TLS-terminating reverse proxy with upstream keep-alive."""
from __future__ import annotations

from pathlib import Path

from . import fixtures
from .processes import Pinned

# Shared by both roles: one worker (one core), no access log, keep-alive that outlives any run.
_MAIN = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:tls:10m;
    types {{ application/json json; }}
    default_type application/json;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{server}
}}
"""

_UPSTREAM_SERVER = """\
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {docroot};
        location = {pod_path} {{ try_files /pod.json =404; }}
        location = {pod_list_path} {{ try_files /pods.json =404; }}
    }}"""

# What a plain proxy does for the same job: strip the /clusters/<name> prefix, present the
# cluster's credential and an impersonation header, verify the cluster's CA.
_PROXY_SERVER = """\
    upstream cluster {{
        server 127.0.0.1:{upstream_port};
        keepalive {keepalive};
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /clusters/{cluster}/ {{
            proxy_pass https://cluster/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {cluster_token}";
            proxy_set_header Impersonate-User "{user}";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {upstream_ca};
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
        }}
    }}"""


def _start(name: str, prefix: Path, core: int, server: str) -> Pinned:
    prefix.mkdir(parents=True)
    config = prefix / "nginx.conf"
    config.write_text(_MAIN.format(prefix=prefix, server=server))
    return Pinned(name, core, ["nginx", "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log"),
                               "-g", "daemon off;"], log=prefix / "stdout.log")


def start_upstream(prefix: Path, core: int, port: int, files: fixtures.UpstreamFiles) -> Pinned:
    return _start("upstream nginx", prefix, core, _UPSTREAM_SERVER.format(
        port=port, cert=files.cert, key=files.key, docroot=files.docroot,
        pod_path=fixtures.POD_PATH, pod_list_path=fixtures.POD_LIST_PATH))


def start_proxy(prefix: Path, core: int, port: int, upstream_port: int, keepalive: int, cert: Path, key: Path,
                upstream_ca: Path, cluster: str, cluster_token: str, user: str) -> Pinned:
    return _start("nginx proxy", prefix, core, _PROXY_SERVER.format(
        port=port, cert=cert, key=key, upstream_port=upstream_port, keepalive=keepalive, upstream_ca=upstream_ca,
        cluster=cluster, cluster_token=cluster_token, user=user))
