"""DNS answers from a view of the mesh. Pure: no sockets, no clock, no resolver.

Both programs answer DNS (DESIGN.md, "Speaking Consul and DNS"), each from its own view: a
list of (member record, reachable) pairs. A node passes itself as reachable and its peers
as reachable while their link is `connected`; the distributor passes every registered
member as reachable. `DnsView.respond` turns the bytes of one query into the bytes of its
answer (or None: drop it), cut to the size the transport allows.

Names, below `<domain>` (matched case-insensitively):
- `[<tag>.]<service>.service`: A/AAAA, each distinct address of the healthy instances
  (passing or warning, agent reachable and not draining); SRV, one a healthy instance
  (priority 1, weight 1, its port), each with its target's address in the additional
  section.
- RFC 2782: `_<service>._tcp[.service]` (no tag filter), `_<service>._<tag>[.service]`.
- `<name>.node`: the member's advertise host. `<hex ip>.addr`: that address.
- `service`, `node` and `addr` may be followed by our datacenter, as Consul allows.

An instance's address may be a host name. Resolving it is I/O, so it is the caller's: the
answer lists the names it needed and did not find in `resolved`, and the caller resolves
them and asks again (shared/dnsserver.py keeps a small cache).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

from shared.wire import DNS_LABEL, Member, parse_address

View = Sequence[tuple[Member, bool]]  # every member this process knows, and whether it is reachable
Shuffle = Callable[[list[Any]], None]  # random.Random().shuffle, or a fixed order in tests
Resolved = Callable[[str], Sequence[str] | None]  # host name -> its addresses; None: not known yet

UDP_SIZE = 512  # RFC 1035: a UDP answer without EDNS
MAX_SIZE = 65535  # a DNS message: a TCP answer, or the most a UDP query may offer with EDNS
OUR_PAYLOAD = 4096  # what our EDNS answers say we accept (RFC 6891's usual figure)
HEALTHY = ("passing", "warning")  # as Consul's DNS: warning instances are still answered
KINDS = ("service", "node", "addr")
ADDRESS_TYPES = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}
MAX_CACHED = 1024  # names' records kept for one view; past that, the cache starts over
# (answer, additional) pairs: an SRV and its target's address go, or are cut, together
Answers = list[tuple[dns.rrset.RRset, dns.rrset.RRset | None]]


def nothing_to_resolve(name: str) -> Sequence[str] | None:
    return None


class _Lookups:
    """The addresses of an instance's or a member's host, for one answer: itself when an IP
    address, else what `resolved` knows of the name (IPv4 first). Notes whether any host
    name was needed, and which ones were not known."""

    def __init__(self, resolved: Resolved) -> None:
        self.resolved = resolved
        self.used = False
        self.unresolved: set[str] = set()

    def __call__(self, host: str) -> list[str]:
        ip = _ip(host)
        if ip is not None:
            return [str(ip)]
        self.used = True
        addresses = self.resolved(host.lower())
        if addresses is None:
            self.unresolved.add(host.lower())
            return []
        ips = [ip for ip in map(_ip, addresses) if ip is not None]
        return [str(ip) for ip in sorted(ips, key=lambda ip: ip.version)]


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: `wire`, or nothing (None: a packet not worth an answer)."""

    wire: bytes | None
    rcode: int = dns.rcode.NOERROR
    truncated: bool = False
    # host names the answer needed and `resolved` did not know: resolve them, then ask again
    unresolved: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Query:
    """What a name in our domain stands for."""

    kind: str  # service, node, addr or apex
    service: str = ""
    tag: str | None = None
    node: str = ""
    address: str = ""  # addr: the address the hex stands for


def parse_query(data: bytes) -> dns.message.Message | None:
    """The query in `data`, or None for anything not worth an answer: bytes that are not a
    DNS message (garbage, cut short, compression loops, trailing bytes) and responses (a
    response answered would let two servers bounce packets at each other forever)."""
    try:
        message = dns.message.from_wire(data, ignore_trailing=False)
    except Exception:  # dnspython raises many kinds for many shapes of bad input
        return None
    if message.flags & dns.flags.QR:
        return None
    return message


def transport_limit(query: dns.message.Message, tcp: bool) -> int:
    """The largest answer the client takes: TCP 64 KiB; UDP 512 bytes, or with EDNS the size
    the query offers (never under 512, never over what a message can be)."""
    if tcp:
        return MAX_SIZE
    if query.edns < 0:
        return UDP_SIZE
    return max(UDP_SIZE, min(MAX_SIZE, query.payload))


def address_label(address: str) -> str:
    """`<hex ip>`: an address as Consul writes it in `<hex>.addr.<domain>`."""
    return ipaddress.ip_address(address).packed.hex()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone means nothing here
    except ValueError:
        return None


class DnsView:
    def __init__(self, domain: str, ttl: int = 0, datacenter: str | None = None) -> None:
        self.domain = dns.name.from_text(domain)
        self.ttl = ttl
        self.datacenter = datacenter.lower() if datacenter else None
        # the negative answers' TTL is the SOA's minimum (RFC 2308): the same TTL as the rest
        soa = dns.rdtypes.ANY.SOA.SOA(
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            dns.name.Name(("ns", *self.domain.labels)),
            dns.name.Name(("hostmaster", *self.domain.labels)),
            1,  # serial: there are no zone transfers to tell of a change
            3600,
            600,
            86400,
            ttl,
        )
        self._soa = dns.rrset.from_rdata(self.domain, ttl, soa)
        self._fingerprint: tuple[Any, ...] = ()  # of the view the cache's records are from
        self._cache: dict[tuple[str, int], Answers | None] = {}

    # -- the whole exchange --------------------------------------------------------------

    def respond(
        self,
        data: bytes,
        view: View,
        *,
        tcp: bool,
        shuffle: Shuffle,
        resolved: Resolved = nothing_to_resolve,
    ) -> Reply:
        """The answer to the query in `data`, as bytes that fit the transport."""
        query = parse_query(data)
        if query is None:
            return Reply(None)
        return self.answer(query, view, tcp=tcp, shuffle=shuffle, resolved=resolved)

    def answer(
        self,
        query: dns.message.Message,
        view: View,
        *,
        tcp: bool,
        shuffle: Shuffle,
        resolved: Resolved = nothing_to_resolve,
    ) -> Reply:
        """The answer to a parsed query."""
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        response.flags |= dns.flags.AA
        limit = transport_limit(query, tcp)
        if query.opcode() != dns.opcode.QUERY:
            return self._error(response, dns.rcode.NOTIMP, limit)
        if len(query.question) != 1:
            return self._error(response, dns.rcode.FORMERR, limit)
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass != dns.rdataclass.IN or not qname.is_subdomain(self.domain):
            response.flags &= ~dns.flags.AA  # not ours to speak for; and no recursion
            response.set_rcode(dns.rcode.REFUSED)
            return Reply(self._wire(response, limit), dns.rcode.REFUSED)
        lookups = _Lookups(resolved)
        answers = self._records(qname, qtype, view, lookups)
        unresolved = frozenset(lookups.unresolved)
        if answers is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority = [self._soa]
            return Reply(self._wire(response, limit), dns.rcode.NXDOMAIN, False, unresolved)
        if not answers:
            response.authority = [self._soa]
            return Reply(self._wire(response, limit), dns.rcode.NOERROR, False, unresolved)
        answers = list(answers)  # the cache's own list stays as it is
        shuffle(answers)
        wire, truncated = self._fit(response, answers, limit)
        return Reply(wire, dns.rcode.NOERROR, truncated, unresolved)

    def _records(
        self, qname: dns.name.Name, qtype: int, view: View, lookups: _Lookups
    ) -> Answers | None:
        """The records for a name in our domain, from the cache while the view is the same.

        dnspython takes about as long to make the records as to render them, and a view
        changes far less often than it is asked: the records are kept per name (as asked,
        case and all) and type, all dropped when any member's record or reachability
        changes. A member's record never changes within one incarnation, except a node's
        own address and draining flag (set without a new one), so those count too. Answers
        that needed a host name are not kept: its addresses may change with no new record.
        """
        parsed = self.parse_name(qname)
        if parsed is None:
            return None
        if parsed.kind == "apex":
            return [(self._soa, None)] if qtype == dns.rdatatype.SOA else []
        if parsed.kind == "addr":
            return self._addresses(qname, qtype, [parsed.address])
        fingerprint = tuple(
            (m.id, m.incarnation, m.address, m.draining, reachable) for m, reachable in view
        )
        if fingerprint != self._fingerprint or len(self._cache) >= MAX_CACHED:
            self._fingerprint, self._cache = fingerprint, {}
        key = (qname.to_text(), qtype)
        if key in self._cache:
            return self._cache[key]
        if parsed.kind == "service":
            answers = self._service(qname, qtype, parsed, view, lookups)
        else:
            answers = self._node(qname, qtype, parsed.node, view, lookups)
        if not lookups.used:
            self._cache[key] = answers
        return answers

    # -- names ---------------------------------------------------------------------------

    def parse_name(self, qname: dns.name.Name) -> Query | None:
        """What a name in our domain stands for; None: nothing (NXDOMAIN)."""
        labels = [
            label.decode("ascii", "replace").lower()
            for label in qname.relativize(self.domain).labels
        ]
        if not labels:
            return Query("apex")
        if labels[-1] in KINDS:
            kind, rest = labels[-1], labels[:-1]
        elif len(labels) >= 2 and labels[-2] in KINDS:
            if self.datacenter is None or labels[-1] != self.datacenter:
                return None  # another datacenter, of which we know nothing
            kind, rest = labels[-2], labels[:-2]
        elif len(labels) == 2 and all(label.startswith("_") for label in labels):
            kind, rest = "service", labels  # RFC 2782 without `.service`
        else:
            return None
        if not rest:
            return None
        if kind == "node":
            return Query("node", node=".".join(rest))
        if kind == "addr":
            if len(rest) != 1:
                return None
            address = _hex_address(rest[0])
            return None if address is None else Query("addr", address=address)
        if len(rest) == 1:
            return Query("service", service=rest[0])
        if len(rest) == 2:
            first, second = rest
            if first.startswith("_") and second.startswith("_"):  # RFC 2782
                tag = second[1:]
                return Query("service", service=first[1:], tag=None if tag == "tcp" else tag)
            return Query("service", service=second, tag=first)
        return None

    # -- answers -------------------------------------------------------------------------
    # Each is None (no such name: NXDOMAIN), [] (the name exists, nothing of that type) or
    # (answer, additional) pairs; an SRV and its target's address go, or are cut, together.

    def _service(
        self,
        qname: dns.name.Name,
        qtype: int,
        query: Query,
        view: View,
        lookups: _Lookups,
    ) -> Answers | None:
        found = []
        for member, reachable in view:
            if not reachable or member.draining:
                continue
            for instance in member.instances:
                if (
                    instance.health in HEALTHY
                    and instance.service.lower() == query.service
                    and (query.tag is None or query.tag in (t.lower() for t in instance.tags))
                ):
                    found.append((member, instance))
        if not found:
            return None
        if qtype == dns.rdatatype.SRV:
            return self._srv(qname, found, view, lookups)
        addresses = []
        for _, instance in found:
            addresses += lookups(instance.address)
        return self._addresses(qname, qtype, list(dict.fromkeys(addresses)))

    def _srv(
        self,
        qname: dns.name.Name,
        found: list[tuple[Member, Any]],
        view: View,
        lookups: _Lookups,
    ) -> Answers:
        names = Counter(member.name.lower() for member, _ in view)
        pairs: dict[tuple[dns.name.Name, int], tuple[dns.rrset.RRset, dns.rrset.RRset]] = {}
        for member, instance in found:
            addresses = lookups(instance.address)
            if not addresses:
                continue  # a host name not resolved (yet): no address to give with it
            address = addresses[0]
            host = parse_address(member.address)[0]
            if (
                instance.address == host
                and DNS_LABEL.fullmatch(member.name)
                and names[member.name.lower()] == 1
            ):
                target = dns.name.Name((member.name.lower(), "node", *self.domain.labels))
            else:
                target = dns.name.Name((address_label(address), "addr", *self.domain.labels))
            if (target, instance.port) in pairs:
                continue  # the same record twice says nothing more
            srv = dns.rdtypes.IN.SRV.SRV(
                dns.rdataclass.IN, dns.rdatatype.SRV, 1, 1, instance.port, target
            )
            pairs[target, instance.port] = (
                dns.rrset.from_rdata(qname, self.ttl, srv),
                dns.rrset.from_rdata(target, self.ttl, _address_rdata(address)),
            )
        return list(pairs.values())

    def _node(
        self,
        qname: dns.name.Name,
        qtype: int,
        name: str,
        view: View,
        lookups: _Lookups,
    ) -> Answers | None:
        hosts = [parse_address(m.address)[0] for m, _ in view if m.name.lower() == name]
        if not hosts:
            return None
        addresses = []
        for host in hosts:
            addresses += lookups(host)
        return self._addresses(qname, qtype, list(dict.fromkeys(addresses)))

    def _addresses(self, qname: dns.name.Name, qtype: int, addresses: list[str]) -> Answers:
        """A records for the IPv4 addresses, AAAA for the IPv6 ones (ANY: both)."""
        wanted = {ADDRESS_TYPES[qtype]} if qtype in ADDRESS_TYPES else set()
        if qtype == dns.rdatatype.ANY:
            wanted = {4, 6}
        return [
            (dns.rrset.from_rdata(qname, self.ttl, _address_rdata(address)), None)
            for address in addresses
            if ipaddress.ip_address(address).version in wanted
        ]

    # -- rendering -----------------------------------------------------------------------

    def _error(self, response: dns.message.Message, rcode: int, limit: int) -> Reply:
        # no question echoed: a FORMERR for three long questions could pass 512 bytes
        response.question = []
        response.set_rcode(rcode)
        return Reply(self._wire(response, limit), rcode)

    @staticmethod
    def _wire(response: dns.message.Message, limit: int) -> bytes | None:
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:  # a question so long that even this does not fit
            return None

    @staticmethod
    def _fit(
        response: dns.message.Message,
        answers: Answers,
        limit: int,
    ) -> tuple[bytes | None, bool]:
        """As many whole answers (an SRV with its address) as fit in `limit`, in order; TC
        set when some were left out. Each record is an RRset of its own, so two SRV records
        with one target each get their own address record (HAProxy reads one each)."""

        def render(count: int) -> bytes:
            chosen = answers[:count]
            response.answer = [answer for answer, _ in chosen]
            response.additional = [extra for _, extra in chosen if extra is not None]
            return response.to_wire(max_size=limit)

        try:
            return render(len(answers)), False
        except dns.exception.TooBig:
            pass
        response.flags |= dns.flags.TC
        low, high = 0, len(answers) - 1  # render(low) fits, once checked; render(high + 1) not
        try:
            best = render(0)
        except dns.exception.TooBig:
            return None, True
        while low < high:
            middle = (low + high + 1) // 2
            try:
                wire = render(middle)
            except dns.exception.TooBig:
                high = middle - 1
            else:
                low, best = middle, wire
        return best, True


def _hex_address(label: str) -> str | None:
    if len(label) not in (8, 32):
        return None
    try:
        return str(ipaddress.ip_address(bytes.fromhex(label)))
    except ValueError:
        return None


def _address_rdata(address: str) -> dns.rdata.Rdata:
    if ipaddress.ip_address(address).version == 4:
        return dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, address)
    return dns.rdtypes.IN.AAAA.AAAA(dns.rdataclass.IN, dns.rdatatype.AAAA, address)
