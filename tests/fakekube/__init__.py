"""A fake Kubernetes API server (TLS, REST, watch, logs, exec/attach/port-forward hand-over).

Import `tests.fakekube.server.FakeKube`; `tests.fakekube.threaded.running` runs one on a thread.
"""
