"""The tunnel's greeting, agent identities and the snapshot's allow-list, reconnect backoff."""
from __future__ import annotations

import copy

import pytest

from dataplane.pki import CertificateAuthority
from dataplane.snapshot import Snapshot, SnapshotError, validate
from dataplane.tunnel import protocol
from dataplane.tunnel.backoff import Backoff
from dataplane.tunnel.identities import allowed, certificate_identities, identity_problem, spki_sha256
from tests.dataplane.gateway.helpers import snapshot_dict


def test_greeting_and_answers():
    reader = protocol.LineReader()
    assert reader.feed(b"ACCESSPOINT-TUNNEL/1 pro") is None
    line, rest = reader.feed(b"d-eu\r\n\x00\x01")
    assert protocol.parse_greeting(line) == "prod-eu" and rest == b"\x00\x01"
    assert protocol.greeting("prod-eu") == b"ACCESSPOINT-TUNNEL/1 prod-eu\r\n"
    accepted = protocol.parse_answer(protocol.accept("gw-a", 1, 2).rstrip())
    assert accepted == protocol.Accepted("gw-a", 1, 2) and accepted.key == ("gw-a", 1)
    with pytest.raises(protocol.HelloError, match="refused the tunnel: not allowed"):
        protocol.parse_answer(protocol.refuse("not\r\nallowed").rstrip(b"\r\n").replace(b"  ", b" "))


@pytest.mark.parametrize("line", [b"OK", b"OK gw", b"OK gw 2 2", b"OK gw x 2", b"OK gw 0 2 extra", b"OK  0 1",
                                  b"OK gw 0 999", b"HELLO"])
def test_bad_acceptance_lines(line):
    with pytest.raises(protocol.HelloError):
        protocol.parse_answer(line)


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1", b"ACCESSPOINT-TUNNEL/1 ", b"ACCESSPOINT-TUNNEL/1 a b",
                                  b"ACCESSPOINT-TUNNEL/1 \xff"])
def test_bad_greetings(line):
    with pytest.raises(protocol.HelloError):
        protocol.parse_greeting(line)


def test_an_endless_line_is_refused():
    with pytest.raises(protocol.HelloError, match="too long"):
        protocol.LineReader().feed(b"x" * (protocol.MAX_LINE + 1))


def test_certificate_identities_and_allow_list():
    issued = CertificateAuthority.create("agents").issue_client("agent-prod")
    ids = certificate_identities(issued.cert)
    assert ids == {"cn:agent-prod", "spki-sha256:" + spki_sha256(issued.cert)}
    assert allowed(ids, frozenset({"cn:agent-prod"}))
    assert allowed(ids, frozenset({"spki-sha256:" + spki_sha256(issued.cert)}))
    assert not allowed(ids, frozenset({"cn:agent-dev", "spki-sha256:" + "0" * 64}))
    assert not allowed(ids, frozenset())


@pytest.mark.parametrize("value,ok", [("cn:agent", True), ("spki-sha256:" + "ab" * 32, True), ("cn:", False),
                                      ("spki-sha256:" + "AB" * 32, False), ("agent", False)])
def test_identity_syntax(value, ok):
    assert (identity_problem(value) is None) == ok


def test_snapshot_field_agent_identities():
    data = snapshot_dict({"alpha": (6443, b"ca")})
    data["clusters"][0].update(tunnel=True, agent_identities=["cn:agent-alpha"])
    validate(copy.deepcopy(data))
    assert Snapshot(data).clusters["alpha"].agent_identities == {"cn:agent-alpha"}
    data["clusters"][0]["agent_identities"] = ["agent-alpha"]
    with pytest.raises(SnapshotError, match=r"clusters\[0\].agent_identities\[0\] must start with cn:"):
        validate(data)


def test_backoff_grows_with_jitter_up_to_the_cap_and_resets():
    low = Backoff(1.0, 8.0, rng=lambda: 0.0)
    high = Backoff(1.0, 8.0, rng=lambda: 0.999)
    assert [low.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [high.next() for _ in range(5)] == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0], abs=0.01)
    low.reset()
    assert low.next() == 0.5


def test_tunnel_keepalive_reports_the_round_trip_time_of_each_answered_ping(monkeypatch):
    seen = []
    clock = [100.0]
    monkeypatch.setattr(protocol.time, "monotonic", lambda: clock[0])
    keepalive = protocol.TunnelKeepalive(5.0, 5.0, float("inf"), 100.0, on_rtt=seen.append)
    assert keepalive.tick(106.0, 0) == keepalive.PING        # idle tunnels are pinged too
    clock[0] = 106.25
    keepalive.acked()
    assert seen == [0.25] and keepalive.rtt == 0.25 and keepalive.ping_sent is None
    keepalive.acked()                                         # an unsolicited ACK measures nothing
    assert seen == [0.25]
