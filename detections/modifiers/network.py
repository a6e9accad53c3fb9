"""``|cidr``: the field holds an IP address inside one of the networks."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from detections.fields import Cache, Getter
from detections.matchers import MatchSpecError, Predicate, combine, memoize
from detections.modifiers.base import MatchType, Spec, Target

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: Sequence[Any]) -> list[Network]:
    """The networks of a rule's values; MatchSpecError at the first invalid one."""
    nets = []
    for i, v in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError:
            raise MatchSpecError(f"invalid CIDR {v!r}", i) from None
    return nets


def cidr_test(nets: Sequence[Network]) -> Callable[[str], bool]:
    """Whether an address text lies in any of ``nets``: memoized, one set lookup per prefix
    length, so a feed of thousands of Tor exit nodes costs what a handful does.

    >>> test = cidr_test([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fc00::/7")])
    >>> test("10.1.2.3"), test("11.0.0.1"), test("fd00::1"), test("not an address")
    (True, False, True, False)
    """
    # (version, prefix length) -> network numbers shifted down to their prefix
    tables: dict[tuple[int, int], set[int]] = {}
    for net in nets:
        shift = net.max_prefixlen - net.prefixlen
        tables.setdefault((net.version, net.prefixlen), set()).add(
            int(net.network_address) >> shift
        )
    by_version = {
        version: tuple(
            (bits - length, frozenset(numbers))
            for (v, length), numbers in sorted(tables.items())
            if v == version
        )
        for version, bits in ((4, 32), (6, 128))
    }

    def test(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        number = int(address)
        return any(number >> shift in numbers for shift, numbers in by_version[address.version])

    return memoize(test)


def _in_network(net: Network) -> Callable[[Any], bool]:
    def test(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            return ipaddress.ip_address(value) in net
        except ValueError:
            return False

    return test


def _any_address(getter: Getter, test: Callable[[str], bool]) -> Predicate:
    """Any string leaf of the field passes the (memoized) address test."""

    def pred(event: dict[str, Any], cache: Cache) -> bool:
        for leaf in getter(event, cache):  # noqa: SIM110 - a plain loop is faster on the hot path
            if isinstance(leaf, str) and test(leaf):
                return True
        return False

    return pred


class Cidr(MatchType):
    """``|cidr``: IPv4 and IPv6 networks; with ``|all`` the address must be in every one."""

    cased = False

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        nets = networks(values)
        if spec.match_all:
            return combine(target.leaves, [_in_network(n) for n in nets], True)
        return _any_address(target.leaves, cidr_test(nets))

    def text_test(self, spec: Spec, values: Sequence[Any]) -> Callable[[str], bool] | None:
        nets = networks(values)
        return cidr_test(nets[:1] if spec.match_all else nets)
