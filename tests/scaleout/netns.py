"""A network namespace joined to this one by a veth pair, for losing a
process's network for real: ``run_in`` prefixes a command so it runs inside
the namespace, ``cut`` takes the namespace's end of the link down (its
packets go nowhere, and nothing comes back: the far side hears silence, not
a reset), ``restore`` brings it back up.

Names and addresses are unique per use (other test runs on the machine may
hold theirs at the same time); everything is deleted at the end, whatever
happened. Needs root (``ip netns add``): without it this fails, with the
reason, rather than skip, since CI runs as root."""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


@dataclass(frozen=True)
class Netns:
    name: str
    host_dev: str  # this namespace's end of the veth pair
    ns_dev: str  # the namespace's end
    host_addr: str  # on host_dev: what the namespace reaches this side by
    ns_addr: str

    def run_in(self) -> list[str]:
        """The prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.ns_dev, "down")

    def restore(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.ns_dev, "up")


def _free_subnet() -> int:
    """The third octet of a 10.213.X.0/30 no address of this namespace is in."""
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=30).stdout
    for _ in range(100):
        x = random.randrange(1, 255)
        if f" 10.213.{x}." not in shown:
            return x
    raise RuntimeError("no free 10.213.X.0/30 subnet")


@contextmanager
def network_namespace() -> Iterator[Netns]:
    if os.geteuid() != 0:
        raise RuntimeError(
            "the network-loss tests need root (ip netns add, veth pairs); CI runs them as root: run them as root"
        )
    tag = uuid.uuid4().hex[:8]
    x = _free_subnet()
    ns = Netns(f"sessions-{tag}", f"sh{tag}", f"sn{tag}", f"10.213.{x}.1", f"10.213.{x}.2")
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_dev, "type", "veth", "peer", "name", ns.ns_dev)
        _ip("link", "set", ns.ns_dev, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_addr}/30", "dev", ns.host_dev)
        _ip("link", "set", ns.host_dev, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.ns_addr}/30", "dev", ns.ns_dev)
        _ip("netns", "exec", ns.name, "ip", "link", "set", ns.ns_dev, "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        # (deleting one end deletes the pair; the namespace's end goes with it)
        subprocess.run(["ip", "link", "del", ns.host_dev], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=30)
