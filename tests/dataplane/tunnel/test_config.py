"""Tunnel options of the gateway and the agent's configuration: every problem named at once."""
from __future__ import annotations

import pytest

from dataplane.agent import AgentConfig
from dataplane.config import GatewayConfig
from dataplane.options import ConfigError


def test_gateway_tunnel_port_needs_the_agent_ca_and_the_assertion_key():
    config = GatewayConfig(tls_cert="c", tls_key="k", snapshot="s", snapshot_public_key="p", secrets_dir="d",
                           audit_spool="a", tunnel_port=9444, tunnel_assertion_ttl=0)
    with pytest.raises(ConfigError) as info:
        config.validate(check_files=False)
    text = str(info.value)
    assert "--tunnel-client-ca is required with --tunnel-port" in text
    assert "--tunnel-assertion-key is required with --tunnel-port" in text
    assert "--tunnel-assertion-ttl must be between 1 and 300" in text


def test_agent_configuration_problems_are_listed_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        AgentConfig(gateway="gw", api_server="http://api", cert=str(tmp_path / "missing.crt")).validate()
    text = str(info.value)
    for expected in ("--gateway: expected HOST:PORT", "--cluster is required", "missing.crt is not a readable file",
                     "--assertion-key is required", "--api-server must be an https:// URL"):
        assert expected in text


def test_agent_gateway_may_list_several_addresses_and_each_is_checked(tmp_path):
    config = AgentConfig(gateway="lb.example:8443, 10.0.0.7:8443")
    assert config.gateway_addresses == ["lb.example:8443", "10.0.0.7:8443"]
    for gateway, metrics in (("lb.example:8443,gw-b", ""), ("lb.example:8443", "9100")):
        with pytest.raises(ConfigError) as info:
            AgentConfig(gateway=gateway, metrics_listen=metrics).validate()
        assert ("--gateway: expected HOST:PORT" in str(info.value)) == (metrics == "")
        assert ("--metrics-listen: expected HOST:PORT" in str(info.value)) == (metrics != "")


def test_gateway_tunnel_advertise_must_be_host_port(tmp_path):
    config = GatewayConfig(listen="127.0.0.1:8443", tls_cert="c", tls_key="k", snapshot="s", snapshot_public_key="p",
                           tunnel_port=8444, tunnel_client_ca="ca", tunnel_assertion_key="key",
                           tunnel_advertise="gw-a.internal")
    with pytest.raises(ConfigError, match="--tunnel-advertise: expected HOST:PORT"):
        config.validate(check_files=False)
