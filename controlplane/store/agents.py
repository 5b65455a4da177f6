"""Tunnel agents' registration: bootstrap tokens, enrollment, renewal, and the record of refusals.

Enrollment and renewal are revision-bumping transactions like every mutation: the checks (token
unused and unexpired, cluster still registered and tunnelled, certificate not revoked), spending
the token and recording the new certificate commit together, so two agents racing with one token
cannot both win (the revision bump serialises them). The certificate is signed inside that
transaction by the `sign` callable the API passes in, and only returned once it is recorded.
Refusals are recorded apart (`record_refusal`): a refusal is no change of state and must not make
a revision (an unauthenticated caller could otherwise churn snapshots).
"""
from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any, Callable

from ..errors import FailedPrecondition, PermissionDenied, Unauthenticated
from ..model import AgentCertificate, BootstrapToken, Cluster, Refusal, utc_text, utc_text_ms
from . import tables

# Anyone may call Enroll and Renew; their refusals are kept this long, so the table cannot grow
# without bound (the log line at WARNING stays for longer-term records).
REFUSAL_RETENTION = datetime.timedelta(days=30)

# The API's signer: gets the certificate being renewed (None at enrollment: a new agent id), returns
# the recorded form of the certificate it signed and that certificate as PEM.
Signer = Callable[[AgentCertificate | None], "tuple[AgentCertificate, bytes]"]


def _later(moment: str, seconds: float) -> str:
    return utc_text(datetime.datetime.fromisoformat(moment) + datetime.timedelta(seconds=seconds))


def _one(tx: Any, table: tables.Table, where: str, params: tuple) -> Any:
    row = tx.one(f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {where}", params)
    return table.from_row(row) if row is not None else None


def _tunnel_cluster(w: Any, name: str) -> Cluster:
    cluster = _one(w.tx, tables.CLUSTERS, "name = ?", (name,))
    if cluster is None:
        raise PermissionDenied(f"cluster {name!r} is not registered (deregistered?)")
    if not cluster.tunnel:
        raise FailedPrecondition(f"cluster {name!r} is not a tunnel cluster")
    return cluster


def _revoked(tx: Any, serial: str) -> bool:
    return tx.one("SELECT 1 FROM revocations WHERE kind = 'cert_serial' AND value = ?", (serial,)) is not None


class AgentMixin:
    """Store methods (this class is only mixed into controlplane.store.Store)."""

    # -- bootstrap tokens --------------------------------------------------------------------------

    def register_tunnel_cluster(self, actor: str, cluster: Cluster, token: BootstrapToken,
                                ttl: float) -> tuple[int, BootstrapToken]:
        """Register a tunnel cluster and its first bootstrap token in one revision."""
        issued: list[BootstrapToken] = []

        def add_token(w: Any) -> None:
            issued.append(self._insert_bootstrap(w, token, ttl))
        revision = self.create(actor, tables.CLUSTERS, cluster, add_token)
        return revision, issued[0]

    def issue_bootstrap_token(self, actor: str, token: BootstrapToken, ttl: float) -> BootstrapToken:
        """A further bootstrap token for a registered tunnel cluster (another agent, or a lost one)."""
        def work(w: Any) -> BootstrapToken:
            cluster = _one(w.tx, tables.CLUSTERS, "name = ?", (token.cluster,))
            if cluster is None:
                raise FailedPrecondition(f"cluster {token.cluster!r} is not registered")
            if not cluster.tunnel:
                raise FailedPrecondition(f"cluster {token.cluster!r} is not a tunnel cluster: it needs no agent")
            return self._insert_bootstrap(w, token, ttl)
        return self._mutate(actor, "bootstrap_tokens.issue", f"bootstrap_token/{token.id}", work)[1]

    @staticmethod
    def _insert_bootstrap(w: Any, token: BootstrapToken, ttl: float) -> BootstrapToken:
        stored = replace(token, expires_at=_later(w.committed_at, ttl), used_at="", used_by="")
        w.insert(tables.BOOTSTRAP_TOKENS, stored)
        return replace(stored, revision=w.revision)

    def retire_agents(self, w: Any, cluster: str) -> None:
        """On deregistration: its unused tokens go, its certificates can never renew (not even for a
        cluster registered later under the same name)."""
        w.tx.run("DELETE FROM bootstrap_tokens WHERE cluster = ?", (cluster,))
        w.tx.run("UPDATE agent_certificates SET retired = 1 WHERE cluster = ?", (cluster,))

    # -- enrollment and renewal --------------------------------------------------------------------

    def enroll_agent(self, token_sha256: str, cluster: str, sign: Signer) -> tuple[AgentCertificate, bytes]:
        """Spend a bootstrap token of `cluster` on a new agent certificate."""
        with self._read() as tx:
            found = _one(tx, tables.BOOTSTRAP_TOKENS, "sha256 = ?", (token_sha256,))
        if found is None:
            raise Unauthenticated("unknown bootstrap token")

        def work(w: Any) -> tuple[AgentCertificate, bytes]:
            token = _one(w.tx, tables.BOOTSTRAP_TOKENS, "sha256 = ?", (token_sha256,))
            if token is None:
                raise Unauthenticated("unknown bootstrap token")
            if token.cluster != cluster:
                # The token's own cluster is not told: the caller may be probing.
                raise PermissionDenied(f"bootstrap token {token.id} is not one of cluster {cluster!r}")
            if token.used_at:
                raise Unauthenticated(f"bootstrap token {token.id} was already used at {token.used_at}: issue a "
                                      f"new one (apctl cluster bootstrap {cluster})")
            if token.expires_at <= w.committed_at:
                raise Unauthenticated(f"bootstrap token {token.id} expired at {token.expires_at}: issue a new one "
                                      f"(apctl cluster bootstrap {cluster})")
            _tunnel_cluster(w, cluster)
            issued, pem = sign(None)
            issued = replace(issued, cluster=cluster, enrolled_by=f"bootstrap/{token.id}", revision=w.revision)
            w.tx.run("UPDATE bootstrap_tokens SET used_at = ?, used_by = ?, revision = ? WHERE id = ?",
                     (w.committed_at, issued.serial, w.revision, token.id))
            w.insert(tables.AGENT_CERTIFICATES, issued)
            return issued, pem
        return self._mutate(f"agent:{cluster} via bootstrap/{found.id}", "agents.enroll", f"cluster/{cluster}",
                            work)[1]

    def renew_agent(self, serial: str, spki_sha256: str, sign: Signer) -> tuple[AgentCertificate, bytes]:
        """A new certificate for the agent holding live certificate `serial` (whose key the API
        has checked it proves): same agent id and common name, new serial and key."""
        with self._read() as tx:
            found = _one(tx, tables.AGENT_CERTIFICATES, "serial = ?", (serial,))
        if found is None:
            raise Unauthenticated(f"certificate {serial} is not an agent certificate of this control plane")

        def work(w: Any) -> tuple[AgentCertificate, bytes]:
            current = _one(w.tx, tables.AGENT_CERTIFICATES, "serial = ?", (serial,))
            if current.spki_sha256 != spki_sha256:
                raise Unauthenticated(f"certificate {serial} is not the one recorded under its serial")
            if _revoked(w.tx, serial):
                raise PermissionDenied(f"certificate {serial} is revoked: enroll again with a new bootstrap token")
            _tunnel_cluster(w, current.cluster)
            if current.retired:
                raise PermissionDenied(f"certificate {serial} belongs to an earlier registration of cluster "
                                       f"{current.cluster!r}: enroll again with a new bootstrap token")
            if current.expires_at <= w.committed_at:
                raise Unauthenticated(f"certificate {serial} expired at {current.expires_at}: enroll again with a "
                                      "new bootstrap token")
            issued, pem = sign(current)
            issued = replace(issued, cluster=current.cluster, enrolled_by=f"renewal/{serial}", revision=w.revision)
            w.insert(tables.AGENT_CERTIFICATES, issued)
            return issued, pem
        return self._mutate(found.common_name, "agents.renew", f"cluster/{found.cluster}", work)[1]

    # -- reads -------------------------------------------------------------------------------------

    def agent_certificates(self, cluster: str = "") -> list[AgentCertificate]:
        """Recorded agent certificates (of one cluster, or all), oldest first, `revoked` derived."""
        columns = ", ".join(f"a.{column}" for column in tables.AGENT_CERTIFICATES.columns)
        where, params = ("WHERE a.cluster = ? ", (cluster,)) if cluster else ("", ())
        with self._read() as tx:
            rows = tx.all(f"SELECT {columns}, r.value FROM agent_certificates a LEFT JOIN revocations r "
                          f"ON r.kind = 'cert_serial' AND r.value = a.serial {where}ORDER BY a.revision, a.serial",
                          params)
        return [replace(tables.AGENT_CERTIFICATES.from_row(row[:-1]), revoked=row[-1] is not None) for row in rows]

    def agent_certificate(self, serial: str) -> AgentCertificate | None:
        with self._read() as tx:
            return _one(tx, tables.AGENT_CERTIFICATES, "serial = ?", (serial,))

    def bootstrap_subject(self, token_sha256: str) -> str:
        """How a refusal names a presented bootstrap token: by id if it is one (never by secret)."""
        with self._read() as tx:
            found = _one(tx, tables.BOOTSTRAP_TOKENS, "sha256 = ?", (token_sha256,))
        return f"bootstrap/{found.id}" if found is not None else "unknown bootstrap token"

    def bootstrap_tokens(self) -> list[BootstrapToken]:
        with self._read() as tx:
            rows = tx.all(f"SELECT {', '.join(tables.BOOTSTRAP_TOKENS.columns)} FROM bootstrap_tokens "
                          "ORDER BY revision, id")
        return [tables.BOOTSTRAP_TOKENS.from_row(row) for row in rows]

    # -- refusals ----------------------------------------------------------------------------------

    def record_refusal(self, refusal: Refusal) -> None:
        with self._transaction(self._backend.begin_write) as tx:
            tx.run(f"INSERT INTO refusals ({', '.join(tables.REFUSALS.columns)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   tables.REFUSALS.to_row(refusal))
            moment = datetime.datetime.fromisoformat(refusal.at.replace("Z", "+00:00"))
            tx.run("DELETE FROM refusals WHERE at < ?", (utc_text_ms(moment - REFUSAL_RETENTION),))

    def refusals(self, cluster: str = "", limit: int = 100) -> list[Refusal]:
        """Newest first."""
        where, params = ("WHERE cluster = ? ", (cluster,)) if cluster else ("", ())
        with self._read() as tx:
            rows = tx.all(f"SELECT {', '.join(tables.REFUSALS.columns)} FROM refusals {where}"
                          "ORDER BY at DESC, id DESC LIMIT ?", (*params, limit))
        return [tables.REFUSALS.from_row(row) for row in rows]


def live_agent_certificates(tx: Any, moment: str) -> list[AgentCertificate]:
    """What a snapshot needs: unretired, unexpired at `moment`, `revoked` derived (revoked ones stay
    in the list: build_snapshot leaves them out, a pure function of the state)."""
    columns = ", ".join(f"a.{column}" for column in tables.AGENT_CERTIFICATES.columns)
    rows = tx.all(f"SELECT {columns}, r.value FROM agent_certificates a LEFT JOIN revocations r "
                  "ON r.kind = 'cert_serial' AND r.value = a.serial WHERE a.retired = 0 AND a.expires_at > ? "
                  "ORDER BY a.serial", (moment,))
    return [replace(tables.AGENT_CERTIFICATES.from_row(row[:-1]), revoked=row[-1] is not None) for row in rows]
