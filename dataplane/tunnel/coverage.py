"""Which tunnels an agent holds and which it still needs, sans-IO (docs/tunnels.md, "High
availability"). The agent process (agent.py) runs one dial loop per address and asks this object,
before each dial, whether that address can still give it a tunnel it lacks.

The goal: one tunnel to every worker process of every gateway replica, so that whichever worker a
caller's connection lands on holds a tunnel to the cluster. A tunnel is keyed by what the gateway
said when it accepted (`OK <gateway> <worker> <workers>`); a second tunnel with a key already held
is a duplicate and is closed.

Members: the latest member list a gateway sent (the fleet from Redis, authoritative), plus the
replicas reached through a seed that the list does not name (a gateway without Redis sends no
list); those are forgotten with their last tunnel, so a replica that restarted under a new id
does not stay wanted forever.

Addresses: the `seeds` the agent was given (`--gateway`: a load balancer, or replicas) and the
direct addresses the replicas advertise in the member list. An address is worth dialling when:
- it is a replica's advertised address and a worker of that replica is not covered; or
- it is a seed and no live tunnel came through it (that is how the agent learns which replicas
  sit behind it), unless every known worker is covered and every replica advertises an address
  (the seed could only lead to a duplicate); or
- it is a seed, and a replica that advertises no address is not covered and was reached through
  this seed or through no address at all.
"""
from __future__ import annotations

from .membership import Member
from .protocol import Accepted


class Coverage:
    def __init__(self, seeds: list[str]):
        self.seeds = list(dict.fromkeys(seeds))
        self.members: dict[str, Member] = {}
        self._listed: set[str] = set()                     # in the latest member list
        self.held: dict[tuple[str, int], object] = {}      # (gateway, worker) → tunnel
        self._via: dict[object, str] = {}                  # tunnel → address it was dialled at
        self._reached: dict[str, set[str]] = {}            # address → gateways reached through it

    # -- what the gateways tell us ---------------------------------------------------------------
    def learn(self, members: list[Member]) -> None:
        """A gateway's member list replaces ours; replicas we hold tunnels to stay known (until
        their last tunnel goes)."""
        held = {key[0] for key in self.held}
        listed = {m.gateway: m for m in members}
        self.members = listed | {g: m for g, m in self.members.items() if g in held and g not in listed}
        self._listed = set(listed)

    def addresses(self) -> list[str]:
        """Every address worth a dial loop: the seeds, then the advertised ones."""
        advertised = sorted({m.address for m in self.members.values() if m.address} - set(self.seeds))
        return self.seeds + advertised

    # -- tunnels ------------------------------------------------------------------------------------
    def offer(self, address: str, accepted: Accepted, tunnel) -> bool:
        """A tunnel the gateway accepted: True to keep it, False when it is a duplicate."""
        self._reached.setdefault(address, set()).add(accepted.gateway)
        known = self.members.get(accepted.gateway)
        if known is None or known.workers != accepted.workers:
            self.members[accepted.gateway] = Member(accepted.gateway, accepted.workers,
                                                    known.address if known else None)
        if accepted.key in self.held:
            return False
        self.held[accepted.key] = tunnel
        self._via[tunnel] = address
        return True

    def lost(self, tunnel) -> None:
        """A held tunnel closed or is draining: its worker needs a tunnel again."""
        self._via.pop(tunnel, None)
        for key, held in list(self.held.items()):
            if held is tunnel:
                del self.held[key]
                gateway = key[0]
                if gateway not in self._listed and not any(k[0] == gateway for k in self.held):
                    self.members.pop(gateway, None)

    def missing(self) -> list[tuple[str, int]]:
        return sorted((m.gateway, w) for m in self.members.values() for w in range(m.workers)
                      if (m.gateway, w) not in self.held)

    def complete(self) -> bool:
        return bool(self.members) and not self.missing()

    def wanted(self, address: str) -> bool:
        """Whether a dial at `address` may give a tunnel we lack."""
        is_seed = address in self.seeds
        missing = self.missing()
        if is_seed and address not in self._via.values() and (
                missing or any(m.address is None for m in self.members.values()) or not self.members):
            return True
        reached_anywhere = set().union(*self._reached.values()) if self._reached else set()
        for gateway, _worker in missing:
            member = self.members[gateway]
            if member.address == address:
                return True
            if member.address is None and is_seed and (
                    gateway in self._reached.get(address, ()) or gateway not in reached_anywhere):
                return True
        return False
