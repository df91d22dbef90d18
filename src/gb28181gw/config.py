"""One validated configuration: TOML file, then ``GB28181GW_*`` environment, then flags.

Every option is a field of a section dataclass below, with its default and
help text; ``conf/gateway.toml`` documents the same options. A bad value stops
start-up with :class:`ConfigError` naming the key, the reason and where the
value came from.

Environment variables are ``GB28181GW_<SECTION>_<KEY>`` in upper case, e.g.
``GB28181GW_SIP_PORT=5070`` or ``GB28181GW_SIP_LISTEN=0.0.0.0,::``;
``GB28181GW_CONFIG`` names the file. Flags are ``--set section.key=value``
(plus a few shorthands in the CLI).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gb28181gw.errors import ConfigError, ConfigFileMissing, IdError, redact_url
from gb28181gw.ids import GbId, is_id_prefix, type_name

ENV_PREFIX = "GB28181GW_"
#: Variables with our prefix that are not settings: the config file, the CLI's admin URL and display zone,
#: and where compiled modules are (gb28181gw/compiled.py).
NOT_SETTINGS = frozenset(
    {
        "GB28181GW_CONFIG",
        "GB28181GW_ADMIN_URL",
        "GB28181GW_TIME_ZONE",
        "GB28181GW_TOKEN",
        "GB28181GW_CA_FILE",
        "GB28181GW_COMPILED",
        "GB28181GW_COMPILED_DIR",
    }
)


def _opt(
    default: Any,
    help: str,
    check: Callable[[Any], str | None] | None = None,
    *,
    secret: bool | Callable[[str], str] = False,
) -> Any:
    """One option: its default, help text, validity check, and whether its value is a secret.

    A secret is never shown: ``gb28181gw config`` prints :data:`REDACTED` for it and a
    :class:`ConfigError` about it does not quote the value. A value that may *hold* a secret
    (a URL with a password) names the function masking that part: it is shown masked, and
    counts as a secret only when the mask changed something.
    """
    metadata = {"help": help, "check": check, "secret": secret}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be a port number from 0 to 65535"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _at_least(n: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= n else f"must be at least {n}"


def _between(low: int, high: int) -> Callable[[int], str | None]:
    return lambda v: None if low <= v <= high else f"must be from {low} to {high}"


def _addresses(v: list[str]) -> str | None:
    if not v:
        return "needs at least one address"
    for a in v:
        try:
            ipaddress.ip_address(a)
        except ValueError:
            return f"{a!r} is not an IP address"
    return None


def _address(v: str) -> str | None:
    return _addresses([v])


_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}")


def _address_or_host(v: str) -> str | None:
    # a Via and Contact may carry a host name; a typo like 192.168.1.300 is neither
    if not v or not _address(v):
        return None
    if v.replace(".", "").isdigit() or not _HOSTNAME_RE.fullmatch(v):
        return f"{v!r} is not an IP address (nor a host name)"
    return None


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        values = v if isinstance(v, list) else [v]
        bad = [x for x in values if x not in choices]
        return f"must be one of {', '.join(choices)} (got {', '.join(map(str, bad))})" if bad else None

    return check


def _redis_url(v: str) -> str | None:
    # what redis-py's from_url takes, checked here so that a typo stops start-up naming the key
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        return f"is not a Redis URL ({exc})"
    if parts.scheme == "unix":
        return None if parts.path else "names no socket path (unix:///run/redis/redis.sock)"
    if parts.scheme not in ("redis", "rediss"):
        return "must start with redis://, rediss:// or unix:// (redis://127.0.0.1:6379/0)"
    if not parts.hostname:
        return "names no host (redis://127.0.0.1:6379/0)"
    if port == 0:
        return "has port 0"
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        return f"has database {parts.path[1:]!r}: it must be a number (redis://host:6379/0)"
    return None


def _gb_id(v: str) -> str | None:
    try:
        GbId.parse(v)
    except IdError as exc:
        return str(exc)
    return None


def _domain(v: str) -> str | None:
    if v == "":
        return None
    return (
        None
        if (len(v) == 10 and v.isdigit() and v.isascii())
        else "must be 10 digits (or empty: first 10 digits of gateway.id)"
    )


#: Zones that are Beijing time (UTC+8 all year): fixed, so no time-zone database is needed for them
#: (a slim container may have none).
_BEIJING_NAMES = frozenset({"asia/shanghai", "prc", "asia/chongqing", "asia/chungking", "asia/harbin", "cst"})
BEIJING = _dt.timezone(_dt.timedelta(hours=8), "CST")
_OFFSET_RE = re.compile(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?")


def parse_time_zone(name: str) -> _dt.tzinfo:
    """The zone ``name`` stands for: an IANA name (``Asia/Shanghai``), ``UTC`` or an offset (``UTC+8``, ``+05:30``).

    Raises:
        ValueError: saying what is accepted.
    """
    text = name.strip()
    if text.lower() in _BEIJING_NAMES:
        return BEIJING
    if text.upper() in ("UTC", "Z", "GMT", "ETC/UTC"):
        return _dt.UTC
    if m := _OFFSET_RE.fullmatch(text.upper()):
        minutes = int(m[2]) * 60 + int(m[3] or 0)
        if minutes < 24 * 60:
            return _dt.timezone(_dt.timedelta(minutes=minutes if m[1] == "+" else -minutes))
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    raise ValueError(f"unknown time zone {name!r}: use an IANA name (Asia/Shanghai), UTC or an offset (UTC+8)")


def _time_zone(v: str) -> str | None:
    try:
        parse_time_zone(v)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class GatewaySection:
    """Who we are."""

    id: str = _opt("34020000002000000001", "our 20-digit platform ID (type 200)", _gb_id)
    domain: str = _opt("", "SIP domain and digest realm; empty = first 10 digits of id", _domain)
    user_agent: str = _opt("gb28181gw", "User-Agent / Server header text")
    strict_ids: bool = _opt(False, "reject IDs with structural oddities (unknown province, undefined type code)")
    time_zone: str = _opt(
        "Asia/Shanghai",
        "the site's time zone: devices' clocks (Date header), log timestamps and the CLI's times",
        _time_zone,
    )


@dataclass(frozen=True, slots=True)
class SipSection:
    """SIP transports and the transaction layer."""

    listen: list[str] = _opt(["0.0.0.0"], "addresses to listen on; add '::' for IPv6", _addresses)
    port: int = _opt(5060, "SIP port, UDP and TCP", _port)
    transports: list[str] = _opt(["udp", "tcp"], "transports to serve", _one_of("udp", "tcp"))
    advertised_address: str = _opt(
        "",
        "address put in our Via/Contact and SDP; empty = the listen address, or for a wildcard "
        "the local address each device reaches us at",
        _address_or_host,
    )
    t1: float = _opt(0.5, "RFC 3261 T1 (s): RTT estimate", _positive)
    t2: float = _opt(4.0, "RFC 3261 T2 (s): maximum retransmit interval", _positive)
    t4: float = _opt(5.0, "RFC 3261 T4 (s): maximum message lifetime", _positive)
    max_message_size: int = _opt(262144, "bytes in one SIP message", _at_least(1024))
    max_headers: int = _opt(128, "header lines in one SIP message", _at_least(8))
    max_line_length: int = _opt(8192, "characters in one header line", _at_least(256))
    max_body_size: int = _opt(262144, "bytes of body in one SIP message", _at_least(0))
    tcp_idle_timeout: float = _opt(600.0, "close a TCP connection idle this long (s)", _positive)
    tcp_max_connections: int = _opt(20000, "TCP connections at once; more are refused", _at_least(1))
    tcp_message_timeout: float = _opt(
        30.0, "seconds a TCP peer has to finish a message it began; slower ones are closed (slowloris)", _positive
    )
    tcp_partial_budget: int = _opt(
        64 * 1024 * 1024,
        "bytes of unfinished messages held for all TCP peers; past it the slowest are closed",
        _at_least(1024 * 1024),
    )
    udp_receive_buffer: int = _opt(4 * 1024 * 1024, "SO_RCVBUF for the UDP socket (bytes)", _at_least(65536))


def _networks(v: list[str]) -> str | None:
    for item in v:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an IP network (CIDR)"
    return None


def _id_prefixes(v: list[str]) -> str | None:
    bad = [x for x in v if not is_id_prefix(x)]
    return f"ID prefixes must be 1-20 digits (got {', '.join(bad)})" if bad else None


@dataclass(frozen=True, slots=True)
class RegistrarSection:
    """Device registration and liveness (GB/T 28181 §9.1, §9.6)."""

    password: str = _opt(
        "", "global digest password; empty with no per-device password = open registration", secret=True
    )
    require_provisioned: bool = _opt(False, "refuse devices not added first (gb28181gw device add)")
    accept_platforms: bool = _opt(
        False, "let platform IDs (type 200) register as devices; lower platforms register by cascade"
    )
    expires_min: int = _opt(60, "shortest registration accepted (s); shorter gets 423 Interval Too Brief", _at_least(1))
    expires_max: int = _opt(86400, "longest registration granted (s); longer is cut to this", _at_least(60))
    expires_default: int = _opt(3600, "registration period when the device names none (s)", _at_least(60))
    date_header: str = _opt(
        "milliseconds", "Date in the 200 OK for time sync", _one_of("milliseconds", "seconds", "off")
    )
    check_request_domain: bool = _opt(True, "refuse a REGISTER addressed to another 10-digit domain")
    digest_algorithm: str = _opt("MD5", "MD5 (what devices speak) or SHA-256", _one_of("MD5", "SHA-256"))
    digest_qop: bool = _opt(False, "offer qop=auth in challenges (the safest universal challenge has none)")
    nonce_lifetime: float = _opt(300.0, "seconds a nonce stays valid; then stale=true", _positive)
    max_auth_failures: int = _opt(5, "failures within failure_window that ban an address or ID", _at_least(1))
    failure_window: float = _opt(300.0, "seconds over which failures are counted", _positive)
    ban_seconds: float = _opt(600.0, "how long a ban lasts (s)", _positive)
    persist_bans: bool = _opt(False, "keep bans in the store across restarts (off: a restart lifts every ban)")
    allow_ids: list[str] = _opt([], "ID prefixes allowed to register (empty = all)", _id_prefixes)
    deny_ids: list[str] = _opt([], "ID prefixes refused", _id_prefixes)
    allow_networks: list[str] = _opt([], "source networks allowed (CIDR; empty = all)", _networks)
    deny_networks: list[str] = _opt([], "source networks refused (CIDR)", _networks)
    trusted_proxies: list[str] = _opt(
        [],
        "SIP fronts (CIDR) whose Path received=IP names the device's address for the allow/deny networks and bans",
        _networks,
    )
    keepalive_interval: int = _opt(60, "expected heartbeat interval (s) when a device's own is unknown", _at_least(1))
    keepalive_count: int = _opt(3, "missed heartbeats before a device is offline", _at_least(1))
    accept_port_change: bool = _opt(
        True, "a MESSAGE from the registered IP but another port moves the device there (NAT rebinding)"
    )
    quick_path: bool = _opt(
        True, "answer plain REGISTERs and keepalives over UDP on the quick path (same answers, less CPU)"
    )


@dataclass(frozen=True, slots=True)
class DevicesSection:
    """Queries to registered devices (PROTOCOL.md §5)."""

    catalog_on_register: bool = _opt(True, "ask a device for DeviceInfo and its Catalog when it registers")
    query_timeout: float = _opt(10.0, "seconds to wait for a query's Response MESSAGE", _positive)
    catalog_first_timeout: float = _opt(
        120.0, "seconds to wait for the first Catalog part (big platforms are slow)", _positive
    )
    catalog_idle_timeout: float = _opt(
        5.0, "seconds of quiet after which a Catalog answer is taken as it is", _positive
    )
    catalog_total_timeout: float = _opt(
        900.0, "seconds after which a Catalog answer still arriving is cut and kept as partial", _positive
    )
    max_channels: int = _opt(
        100_000, "channels kept per device (a city platform's catalog fits); more are refused", _at_least(1)
    )
    subscribe: list[str] = _opt(
        ["catalog"], "subscriptions made when a device registers", _one_of("catalog", "alarm", "mobile-position")
    )
    subscribe_expires: int = _opt(3600, "Expires asked for subscriptions (s); refreshed at 80 %", _at_least(60))


#: ``f=`` of §7.4.2, loosely: ``v/`` and five fields (digits, or ``WxH`` for the resolution), then
#: ``a/`` and three; either block may be absent, every field empty (``v/2/6/25/1/4096a///``).
_OFFER_FORMAT = re.compile(r"(v(/[0-9xX]*){5})?(a(/[0-9]*){3})?")


def _offer_format(v: str) -> str | None:
    if re.fullmatch(_OFFER_FORMAT, v):
        return None
    return "must be empty or an f= of GB/T 28181 §7.4.2, e.g. v/2/6/25/1/4096a/1/8/1 or v/2/////a///"


def _workers(v: int) -> str | None:
    return None if v >= -1 else "must be -1 (one per core), 0 (in the gateway's process) or a number of processes"


@dataclass(frozen=True, slots=True)
class MediaSection:
    """Live streams: INVITE to devices and the RTP relay (PROTOCOL.md §7, §8)."""

    address: str = _opt(
        "",
        "media IP put in our SDP (where devices send); empty = sip.advertised_address, else media.listen "
        "if not a wildcard, else the address each device reached us at",
    )
    listen: str = _opt("0.0.0.0", "address media sockets bind to", _address)
    port_min: int = _opt(30000, "first media port (RTP uses even ports)", _port)
    port_max: int = _opt(31999, "last media port", _port)
    workers: int = _opt(-1, "relay worker processes: -1 = one per core, 0 = in the gateway's process", _workers)
    stream_mode: str = _opt(
        "udp", "how devices without their own mode send media", _one_of("udp", "tcp-passive", "tcp-active")
    )
    offer_format: str = _opt(
        "", "f= of our INVITE offers, live and recorded (empty = f= with nothing, what devices take)", _offer_format
    )
    invite_timeout: float = _opt(10.0, "seconds to wait for a device's final answer to INVITE (then CANCEL)", _positive)
    rtp_timeout: float = _opt(15.0, "seconds without RTP after which a stream is closed (BYE)", _positive)
    linger: float = _opt(5.0, "seconds a stream stays open after its last consumer leaves", _at_least(0))
    tcp_connect_attempts: int = _opt(
        3, "TCP active: connection attempts to the device (2022 Annex D: >= 3)", _at_least(1)
    )
    tcp_connect_interval: float = _opt(1.0, "TCP active: seconds between attempts (Annex D: >= 1)", _positive)
    tcp_queue: int = _opt(
        1024 * 1024, "bytes queued for a slow TCP consumer before its packets are dropped", _at_least(65536)
    )
    udp_receive_buffer: int = _opt(1024 * 1024, "SO_RCVBUF of each stream's socket (bytes)", _at_least(65536))
    shared_port: bool = _opt(
        False,
        "UDP streams of a relay worker all received on one port (the first of its share), told apart by SSRC "
        "and sender: fewer system calls for many paced streams, but a device sending wrong SSRCs (M1) is "
        "found only while it is the one stream of its host awaiting media; false = a port per stream",
    )
    gop_cache: int = _opt(
        4 * 1024 * 1024,
        "bytes of a stream's packets since its last key frame kept, so a consumer that joins gets a picture "
        "at once (a 4 Mbit/s camera with a key frame every 8 s); 0 = keep none",
        _at_least(0),
    )
    gop_cache_total: int = _opt(
        512 * 1024 * 1024,
        "bytes kept that way by all streams of one relay worker together; past it the largest stream's are "
        "let go (its next joiner gets a key frame asked of the device); 0 = no bound",
        _at_least(0),
    )
    keyframe_request: bool = _opt(
        True, "ask the device for a key frame (IFameCmd) when a consumer joins a stream with nothing kept"
    )
    consumer_connect_timeout: float = _opt(
        10.0, "seconds a TCP-passive consumer (a superior) has to connect to its port (PROTOCOL §8.6: 10-60)", _positive
    )
    port_quarantine: float = _opt(5.0, "seconds a released port rests before reuse (late packets)", _at_least(0))
    ssrc_quarantine: float = _opt(15.0, "seconds a released SSRC rests before reuse (M3)", _at_least(0))
    ssrc_min: int = _opt(
        1,
        "first of the last four digits of the SSRCs we hand out: nodes sharing a Redis store (and so "
        "a gateway.id) each take a range of their own, e.g. 1-4999 and 5000-9999",
        _between(1, 9999),
    )
    ssrc_max: int = _opt(9999, "last of the last four digits of the SSRCs we hand out", _between(1, 9999))
    stats_interval: float = _opt(
        1.0, "seconds between relay workers' reports (bitrate, loss, media timeout)", _positive
    )
    consumer_networks: list[str] = _opt(
        [], "networks (CIDR) the admin API may send streams to besides the requester's own address", _networks
    )


@dataclass(frozen=True, slots=True)
class PlaybackSection:
    """Playback and download of recordings (PROTOCOL.md §7.8-7.9, §9.6)."""

    max_span: float = _opt(
        86400.0, "longest span (seconds) a playback or download may ask for; 0 = no bound", _at_least(0)
    )
    download_speed: int = _opt(
        4, "a=downloadspeed asked of the device when the operator gives none (1 = real time)", _at_least(1)
    )
    control_timeout: float = _opt(
        5.0, "seconds to wait for a device's answer to a playback control (INFO: pause, seek, speed)", _positive
    )
    pause_limit: float = _opt(
        3600.0,
        "seconds a playback may stay paused before it is ended (BYE): a pause has no media timeout; 0 = no bound",
        _at_least(0),
    )
    end_grace: float = _opt(
        10.0, "seconds of video past a span's end after which a session still streaming is ended (BYE)", _at_least(0)
    )


def _digits(n: int) -> Callable[[str], str | None]:
    return lambda v: (
        None if v == "" or (len(v) == n and v.isascii() and v.isdigit()) else f"must be {n} digits or empty"
    )


@dataclass(frozen=True, slots=True)
class LedgerSection:
    """The camera ledger (一机一档) and the authorities' forms it is exported in."""

    industry: str = _opt(
        "",
        "the site's industry code (ID positions 9-10), checked on every exported camera; empty = not checked",
        _digits(2),
    )
    network: str = _opt(
        "",
        "the site's network code (ID position 14), checked on every exported camera; empty = not checked",
        _digits(1),
    )
    forms: str = _opt("", "a directory of the integrator's own form files (*.toml), besides the shipped forms")


@dataclass(frozen=True, slots=True)
class StoreSection:
    """Where state is kept."""

    backend: str = _opt(
        "sqlite", "sqlite (embedded file, the default) or redis (a Redis server: store.url)", _one_of("sqlite", "redis")
    )
    path: str = _opt("gb28181gw.db", "SQLite file (relative to the working directory)")
    url: str = _opt(
        "redis://127.0.0.1:6379/0",
        "Redis server of backend = redis: redis://[:password@]host[:port][/db], rediss:// (TLS) or unix:///path",
        _redis_url,
        secret=redact_url,
    )
    flush_interval: float = _opt(0.5, "seconds between batched writes of changed devices", _positive)


_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _node_id(v: str) -> str | None:
    if v == "" or _NODE_ID_RE.fullmatch(v):
        return None
    return "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (n1)"


def _host_port(v: str) -> str | None:
    # where devices are sent by a director's 302 (a Contact): host:port, the host an IP or a name
    if v == "":
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not host:
        return f"{v!r} must be host:port (127.0.0.1:5061)"
    if not port.isdigit() or not port.isascii() or not 1 <= int(port) <= 65535:
        return f"{v!r} must end in a port number from 1 to 65535 (127.0.0.1:5061)"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{v!r}: {host} is not an IPv6 address"
        return None
    if ":" in host:
        return f"{v!r}: write an IPv6 address in brackets ([::1]:5061)"
    problem = _address_or_host(host)
    return f"{v!r}: {problem}" if problem else None


def _claim_seconds(v: float) -> str | None:
    # renewed every third of it: below 3 s a renewal competes with Redis round trips and loop stalls
    return None if v >= 3.0 else "must be at least 3 (seconds)"


def _lease_seconds(v: float) -> str | None:
    # below this, a renewal every third of it competes with Redis round trips and event-loop stalls
    return None if v >= 1.0 else "must be at least 1 (seconds)"


@dataclass(frozen=True, slots=True)
class NodeSection:
    """This gateway as one of several nodes sharing a Redis store (issue 17)."""

    id: str = _opt(
        "",
        "this node's name, unique among the gateways sharing a Redis store: required with store.backend = redis, "
        "where a second running gateway with the same name is refused",
        _node_id,
    )
    lease_seconds: float = _opt(
        10.0,
        "time to live of a superior's lease (redis backend): one node registers upward to each superior and "
        "renews its lease every third of this; another node takes over within this after the holder dies",
        _lease_seconds,
    )
    director: bool = _opt(
        False,
        "answer devices' REGISTERs (not platforms') with 302 Moved Temporarily naming the node the device ID "
        "hashes to among the live nodes (GB/T 28181-2022 9.1.2.3); 503 with Retry-After when none is live",
    )
    director_serves: bool = _opt(
        False,
        "a director also takes its share of devices (it is one of the nodes the hash chooses from); "
        "by default it only redirects",
    )
    advertised_address: str = _opt(
        "",
        "host:port where devices and other nodes reach this node (a director's 302 names it); "
        "empty = sip.advertised_address (or the one listen address) and sip.port",
        _host_port,
    )
    claim_seconds: float = _opt(
        15.0,
        "time to live of this node's claim on node.id (redis backend), renewed every third of it: a node "
        "killed without a word counts as live, and gets devices from a director, until it runs out",
        _claim_seconds,
    )


@dataclass(frozen=True, slots=True)
class AdminSection:
    """The HTTP admin API, /metrics and health checks."""

    enabled: bool = _opt(True, "serve the admin API")
    listen: str = _opt("127.0.0.1", "address of the admin API (keep it on loopback or a management network)", _address)
    port: int = _opt(8028, "port of the admin API", _port)
    allowed_hosts: list[str] = _opt(
        [], "host names the API answers to besides localhost and IP addresses (DNS-rebinding guard)"
    )
    require_tokens: bool = _opt(
        False,
        "ask every caller for a token even on loopback (beyond loopback tokens are always required, "
        "and start-up needs an admin token: gb28181gw token create NAME --role admin); set it behind a "
        "reverse proxy or tunnel on this host, which would make every user it forwards a loopback caller",
    )
    open_metrics: bool = _opt(True, "serve /metrics without a token (/healthz and /readyz are always open)")
    tls_cert: str = _opt("", "PEM certificate (chain) file: serve the admin API over HTTPS; empty = plain HTTP")
    tls_key: str = _opt("", "PEM private key file of tls_cert")


@dataclass(frozen=True, slots=True)
class AuditSection:
    """The audit trail of every action that changes something or reaches a camera."""

    retention_days: int = _opt(
        366, "days audit records are kept (the rules ask for at least a year)", _between(1, 36_500)
    )


@dataclass(frozen=True, slots=True)
class FloodSection:
    """Per-address limits on SIP requests (like Kamailio's pike): who sends too fast is banned a while."""

    enabled: bool = _opt(True, "limit SIP requests per source address")
    window: float = _opt(2.0, "seconds over which requests are counted", _positive)
    limit: int = _opt(100, "requests per window from an address the gateway does not know", _at_least(1))
    known_limit: int = _opt(
        2000, "requests per window from the address of a registered device or a configured superior", _at_least(1)
    )
    ban: float = _opt(300.0, "seconds an address over its limit is ignored", _positive)
    exempt: list[str] = _opt(
        ["127.0.0.0/8", "::1/128"],
        "networks (CIDR) never limited (a trusted proxy in front of many devices; loopback: this host's own)",
        _networks,
    )
    tcp_per_address: int = _opt(
        100, "TCP connections open at once from one address (exempt networks excepted); more are refused", _at_least(1)
    )
    log_interval: float = _opt(
        60.0, "seconds between log lines about one kind of malformed input (the rest are counted and summed)", _positive
    )


@dataclass(frozen=True, slots=True)
class LogSection:
    """Logging."""

    level: str = _opt("info", "debug, info, warning or error", _one_of("debug", "info", "warning", "error"))
    format: str = _opt("text", "text (key=value lines) or json (one object per line)", _one_of("text", "json"))
    wire: bool = _opt(False, "log every SIP message sent and received (at debug level, secrets redacted)")


@dataclass(frozen=True, slots=True)
class RuntimeSection:
    """Process behaviour."""

    shutdown_timeout: float = _opt(10.0, "seconds to finish in-flight work on SIGTERM before cancelling", _positive)
    uvloop: bool = _opt(True, "use uvloop when it is installed")


def _optional_id(v: str) -> str | None:
    return None if v == "" else _gb_id(v)


def _share(v: Any) -> str | None:
    if v == "all":
        return None
    if not isinstance(v, list):
        return 'must be "all" or a list of device IDs, channel IDs or ID prefixes'
    return _id_prefixes(v)


def _power_of_two(v: int) -> str | None:
    return None if v >= 1 and v & (v - 1) == 0 else "must be 1, 2, 4, 8 … (items per MESSAGE)"


@dataclass(frozen=True, slots=True)
class UpstreamSection:
    """One superior platform we register to (cascade, GB/T 28181 §9.1, PROTOCOL.md §9): one ``[[upstream]]`` table.

    Any number of them, each independent. Unlike the other sections it is a TOML array of
    tables, so it is set in the file only (not from the environment or ``--set``).
    """

    name: str = _opt("", "the operator's handle for this superior, unique (logs, metrics, CLI)")
    id: str = _opt("", "the superior's 20-digit platform ID", _gb_id)
    domain: str = _opt("", "its SIP domain and digest realm; empty = first 10 digits of its id", _domain)
    host: str = _opt("", "its IP address", _address)
    port: int = _opt(5060, "its SIP port", _port)
    transport: str = _opt("udp", "udp or tcp", _one_of("udp", "tcp"))
    local_id: str = _opt("", "our ID toward it; empty = gateway.id", _optional_id)
    username: str = _opt("", "digest username; empty = local_id")
    password: str = _opt("", "digest password", secret=True)
    expires: int = _opt(3600, "registration period asked for (s); refreshed at 80 %", _at_least(60))
    keepalive_interval: int = _opt(60, "seconds between keepalives", _at_least(1))
    keepalive_misses: int = _opt(
        3, "keepalives unanswered in a row that mean it is lost (register again)", _at_least(1)
    )
    retry_interval: float = _opt(
        60.0,
        "seconds before registering again after a failure; doubles per failure (plus up to 20 % jitter)",
        _positive,
    )
    retry_max: float = _opt(600.0, "longest back-off between registration attempts, before jitter (s)", _positive)
    gb_version: str = _opt("", "X-GB-ver sent to it: empty = none, 2.0 (2016) or 3.0 (2022)", _one_of("", "2.0", "3.0"))
    charset: str = _opt("GB2312", "encoding of the XML bodies sent to it", _one_of("GB2312", "GBK", "GB18030", "UTF-8"))
    catalog_batch: int = _opt(4, "catalog items per MESSAGE (1, 2, 4, 8 …)", _power_of_two)
    share: Any = _opt("all", 'what it may see: "all", or a list of device IDs, channel IDs or ID prefixes', _share)
    catalog_push: bool = _opt(
        False, "NOTIFY it of catalog changes even when it holds no catalog subscription (many superiors expect it)"
    )
    platform_item: bool = _opt(
        True, "the catalog sent to it starts with our platform as an item (GB/T 28181-2022 Annex H)"
    )
    ssrc: str = _opt(
        "echo", "SSRC of the media sent to it: echo its y=, or own (ours, returned in our y=)", _one_of("echo", "own")
    )
    allow_commands: list[str] = _opt(
        [],
        "commands that can take a site down it may send (refused with 403 otherwise)",
        _one_of("TeleBoot", "DeviceConfig", "DeviceUpgrade", "FormatSDCard"),
    )

    def label(self, index: int) -> str:
        """How errors and listings name this entry: ``upstream.<name>``, or its position before it has a name."""
        return f"upstream.{self.name}" if self.name else f"upstream[{index}]"


#: Options of ``[[upstream]]`` derived from others when left empty: (how, from what).
UPSTREAM_DERIVED = {
    "domain": "the first 10 digits of its id",
    "local_id": "gateway.id",
    "username": "local_id",
}


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    gateway: GatewaySection = field(default_factory=GatewaySection)
    sip: SipSection = field(default_factory=SipSection)
    registrar: RegistrarSection = field(default_factory=RegistrarSection)
    devices: DevicesSection = field(default_factory=DevicesSection)
    media: MediaSection = field(default_factory=MediaSection)
    playback: PlaybackSection = field(default_factory=PlaybackSection)
    ledger: LedgerSection = field(default_factory=LedgerSection)
    store: StoreSection = field(default_factory=StoreSection)
    node: NodeSection = field(default_factory=NodeSection)
    admin: AdminSection = field(default_factory=AdminSection)
    audit: AuditSection = field(default_factory=AuditSection)
    flood: FloodSection = field(default_factory=FloodSection)
    log: LogSection = field(default_factory=LogSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    #: The superiors we register to (``[[upstream]]`` tables), in file order.
    upstreams: tuple[UpstreamSection, ...] = ()
    #: Where each option set away from its default came from (``"sip.port"`` → ``"environment
    #: GB28181GW_SIP_PORT"``); absent keys are defaults. Not part of the configuration's value.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: The file read (``None``: none) and its permission bits, so a readable secret can be warned about.
    file: str | None = field(default=None, compare=False, repr=False)
    file_mode: int = field(default=0, compare=False, repr=False)

    # Options whose empty (or -1) value means "derived" are derived here and nowhere else: the
    # gateway runs on these properties, and `gb28181gw config` shows them (see DERIVED).

    @property
    def domain(self) -> str:
        """``gateway.domain``: the SIP domain and digest realm, explicit or the first 10 digits of our ID."""
        return self.gateway.domain or self.gateway.id[:10]

    @property
    def advertised_address(self) -> str:
        """``sip.advertised_address``: explicit, else the one listen address; ``""`` means per device.

        With a wildcard among the listen addresses (or several of them) no single address is
        right for every device: each is told the local address it reached us on.
        """
        if self.sip.advertised_address:
            return self.sip.advertised_address
        listen = self.sip.listen
        return listen[0] if len(listen) == 1 and not is_wildcard(listen[0]) else ""

    @property
    def node_advertised(self) -> str:
        """``node.advertised_address``: explicit, else what SIP advertises and ``sip.port``; ``""``
        when SIP advertises an address per device (a wildcard listen address): no director can name it."""
        if self.node.advertised_address:
            return self.node.advertised_address
        host = self.advertised_address
        if not host:
            return ""
        return f"[{host}]:{self.sip.port}" if ":" in host else f"{host}:{self.sip.port}"

    @property
    def media_address(self) -> str:
        """The media IP every SDP offer names; ``""`` means each device's own (``SipStack.local_address``).

        ``media.address``, else ``sip.advertised_address``, else ``media.listen`` when the relay
        binds a specific address (it receives nowhere else), else what SIP advertises: with the
        defaults each device is told the address it reached our SIP port at, where the
        wildcard-bound relay receives too.
        """
        m = self.media
        if m.address or self.sip.advertised_address:
            return m.address or self.sip.advertised_address
        return self.advertised_address if is_wildcard(m.listen) else m.listen

    @property
    def relay_workers(self) -> int:
        """``media.workers``: explicit, ``0`` for the gateway's own loop, or one per core for ``-1``."""
        return (os.cpu_count() or 1) if self.media.workers < 0 else self.media.workers

    def upstream_domain(self, up: UpstreamSection) -> str:
        """``domain`` of an ``[[upstream]]``: explicit, or the first 10 digits of its ID."""
        return up.domain or up.id[:10]

    def upstream_local_id(self, up: UpstreamSection) -> str:
        """``local_id`` of an ``[[upstream]]``: explicit, or ``gateway.id``."""
        return up.local_id or self.gateway.id

    def upstream_local_domain(self, up: UpstreamSection) -> str:
        """Our domain toward a superior: ours when we use our own ID, else the first 10 digits of ``local_id``."""
        return self.domain if not up.local_id or up.local_id == self.gateway.id else up.local_id[:10]

    def upstream_username(self, up: UpstreamSection) -> str:
        """``username`` of an ``[[upstream]]``: explicit, or its local ID."""
        return up.username or self.upstream_local_id(up)

    def source(self, key: str) -> str:
        """Where option ``key`` (``section.name``) came from: ``default``, a file, a variable or a flag."""
        return self.sources.get(key, DEFAULT_SOURCE)


#: The source of an option nobody set.
DEFAULT_SOURCE = "default"
#: What is shown instead of a secret option's value (an empty secret is shown as empty: not set).
REDACTED = "********"
#: Shown for an address derived per device (see :attr:`Config.advertised_address`).
PER_DEVICE = "per device"


def is_wildcard(address: str) -> bool:
    """Whether ``address`` is a wildcard listen address (``0.0.0.0``, ``::``, or empty)."""
    if not address:
        return True
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def is_loopback(address: str) -> bool:
    """Whether ``address`` is a loopback address (127.0.0.0/8, ``::1``): unreachable from any device."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Derivation:
    """How an option's empty (or -1) value is turned into the value the gateway runs with.

    Attributes:
        unset: the configured value that means "derive it".
        value: the effective value, from the :class:`Config` property the gateway uses.
        how: in words, for ``gb28181gw config``.
    """

    unset: Any
    value: Callable[[Config], Any]
    how: str


#: Every option whose value is derived when left at ``unset``.
DERIVED: dict[str, Derivation] = {
    "gateway.domain": Derivation("", lambda c: c.domain, "the first 10 digits of gateway.id"),
    "sip.advertised_address": Derivation(
        "",
        lambda c: c.advertised_address or PER_DEVICE,
        "the listen address, or for a wildcard the address each device reached",
    ),
    "media.address": Derivation("", lambda c: c.media_address or PER_DEVICE, "what SIP advertises"),
    "node.advertised_address": Derivation(
        "", lambda c: c.node_advertised or "none", "what SIP advertises, and sip.port"
    ),
    "media.workers": Derivation(-1, lambda c: c.relay_workers, "one per core"),
}


SECTIONS: dict[str, Any] = {
    "gateway": GatewaySection,
    "sip": SipSection,
    "registrar": RegistrarSection,
    "devices": DevicesSection,
    "media": MediaSection,
    "playback": PlaybackSection,
    "ledger": LedgerSection,
    "store": StoreSection,
    "node": NodeSection,
    "admin": AdminSection,
    "audit": AuditSection,
    "flood": FloodSection,
    "log": LogSection,
    "runtime": RuntimeSection,
}


def _coerce(key: str, value: Any, target: Any, source: str, text: bool, *, secret: bool = False) -> Any:
    """Turn ``value`` (typed from TOML, or ``text`` from env/flags) into ``target``'s type."""
    kind = type(target)
    got = "(value not shown: a secret)" if secret else f"(got {value!r})"
    if text and isinstance(value, str) and kind is not str:
        stripped = value.strip()
        if kind is bool:
            low = stripped.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(key, f"must be true or false {got}", source)
        if kind is int:
            try:
                return int(stripped)
            except ValueError:
                raise ConfigError(key, f"must be an integer {got}", source) from None
        if kind is float:
            try:
                return float(stripped)
            except ValueError:
                raise ConfigError(key, f"must be a number {got}", source) from None
        if kind is list:
            return [part.strip() for part in stripped.split(",") if part.strip()]
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false {got}", source)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, f"must be an integer {got}", source)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number {got}", source)
        return float(value)
    if kind is str and not isinstance(value, str):
        raise ConfigError(key, f"must be a string {got}", source)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(key, f"must be a list of strings {got}", source)
        return list(value)
    return value


def all_keys() -> list[str]:
    """Every option as ``section.name``, in the order of the sections and their fields."""
    return [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)]


def env_name(key: str) -> str:
    """The environment variable of option ``key``: ``sip.port`` → ``GB28181GW_SIP_PORT``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def suggest_key(unknown: str) -> str | None:
    """The option an unknown ``section.name`` most likely meant (a typo, or the right name in the wrong section)."""
    section, _, name = unknown.partition(".")
    keys = all_keys()
    if section in SECTIONS and name:
        # a typo inside a known section is likelier than the same typo elsewhere
        own = [k.partition(".")[2] for k in keys if k.startswith(section + ".")]
        close = difflib.get_close_matches(name, own, n=1, cutoff=0.7)
        if close:
            return f"{section}.{close[0]}"
    moved = [k for k in keys if k.partition(".")[2] == name]
    if len(moved) == 1:
        return moved[0]
    close = difflib.get_close_matches(unknown, keys, n=1, cutoff=0.75)
    return close[0] if close else None


#: Settings that were replaced, and what to write instead: a file written for an older release
#: gets told what changed rather than a guess.
REPLACED: dict[str, str] = {
    "registrar.utc_offset_hours": 'gateway.time_zone (e.g. "Asia/Shanghai" or "UTC+8"), which sets the devices\' '
    "Date header, the log timestamps and the times the CLI shows",
}


def _unknown(key: str, known: str, source: str, *, as_env: bool = False) -> ConfigError:
    """The error for an unknown setting, with the nearest real one in the form it was written in."""
    if key in REPLACED:
        return ConfigError(key, f"no longer a setting: use {REPLACED[key]}", source)
    guess = suggest_key(key)
    if guess is None:
        return ConfigError(key, f"unknown setting (known: {known})", source)
    return ConfigError(key, f"unknown setting — did you mean {env_name(guess) if as_env else guess}?", source)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from defaults, a TOML file, the environment and overrides.

    Args:
        path: TOML file; ``None`` uses ``GB28181GW_CONFIG`` if set, else defaults only.
        env: environment to read (default ``os.environ``).
        overrides: ``{"section.key": "value"}`` from the command line; highest precedence.
        flags: the flag each override came from (``{"sip.port": "--port"}``), for
            :attr:`Config.sources`; ``--set`` when absent.

    Raises:
        ConfigError: naming the first bad key, why, and where the value came from; an
            unknown key names the nearest real one.
    """
    env = os.environ if env is None else env
    values: dict[str, dict[str, tuple[Any, str, bool]]] = {name: {} for name in SECTIONS}
    upstreams: tuple[UpstreamSection, ...] = ()
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    file, file_mode = None, 0
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
            file, file_mode = str(p), p.stat().st_mode & 0o777
        except FileNotFoundError:
            raise ConfigFileMissing("config", f"file {str(p)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("config", f"cannot read {str(p)!r}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{str(p)!r} is not valid TOML: {exc}") from None
        for section, table in data.items():
            if section == "upstream":
                upstreams = _load_upstreams(table, str(p))
                continue
            if section not in SECTIONS:
                close = difflib.get_close_matches(section, list(SECTIONS), n=1, cutoff=0.6)
                guess = f"did you mean [{close[0]}]?" if close else f"known: {', '.join(SECTIONS)}"
                raise ConfigError(section, f"unknown section ({guess})", str(p))
            if not isinstance(table, dict):
                raise ConfigError(section, "must be a table", str(p))
            for key, value in table.items():
                values[section][key] = (value, str(p), False)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        env_section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if env_section is None:
            close = difflib.get_close_matches(name, [env_name(k) for k in all_keys()], n=1, cutoff=0.75)
            guess = f"did you mean {close[0]}?" if close else f"sections: {', '.join(SECTIONS)}"
            raise ConfigError(name, f"unknown setting ({guess})", "environment")
        values[env_section][rest[len(env_section) + 1 :]] = (value, f"environment {name}", True)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        flag = (flags or {}).get(dotted, "--set")
        if not key:
            raise ConfigError(dotted, "expected section.key", f"command line {flag}")
        if section not in SECTIONS:
            raise _unknown(dotted, f"sections {', '.join(SECTIONS)}", f"command line {flag}")
        values[section][key] = (value, f"command line {flag}", True)

    built: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        defaults = cls()
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, (value, source, is_text) in values[section].items():
            f = known.get(key)
            dotted = f"{section}.{key}"
            if f is None:
                raise _unknown(dotted, ", ".join(known), source, as_env=source.startswith("environment"))
            coerced = _coerce(dotted, value, getattr(defaults, key), source, is_text, secret=f.metadata["secret"])
            check = f.metadata.get("check")
            problem = check(coerced) if check else None
            if problem:
                raise ConfigError(dotted, problem, source)
            kwargs[key] = coerced
            sources[dotted] = source
        built[section] = replace(defaults, **kwargs)
    config = Config(**built, upstreams=upstreams, sources=sources, file=file, file_mode=file_mode)
    if bool(config.admin.tls_cert) != bool(config.admin.tls_key):
        missing, given = (
            ("admin.tls_key", "admin.tls_cert") if config.admin.tls_cert else ("admin.tls_cert", "admin.tls_key")
        )
        raise ConfigError(missing, f"is needed with {given}: HTTPS takes both the certificate and its key, or neither")
    if config.flood.known_limit < config.flood.limit:
        raise ConfigError(
            "flood.known_limit", "must not be smaller than flood.limit (known devices and superiors get more, not less)"
        )
    if config.sip.t2 < config.sip.t1:
        raise ConfigError("sip.t2", "must not be smaller than sip.t1")
    if config.store.backend == "redis" and not config.node.id:
        raise ConfigError(
            "node.id", "is required with store.backend = redis: a name unique per gateway node sharing it (n1)"
        )
    if config.node.director and config.store.backend != "redis":
        raise ConfigError(
            "node.director",
            "needs store.backend = redis: a director sends devices to the nodes sharing a Redis store",
            config.source("node.director"),
        )
    r = config.registrar
    if not r.expires_min <= r.expires_default <= r.expires_max:
        raise ConfigError("registrar.expires_default", "must lie between registrar.expires_min and expires_max")
    m = config.media
    if m.ssrc_max < m.ssrc_min:
        raise ConfigError("media.ssrc_max", "must not be below media.ssrc_min")
    if m.port_max - m.port_min < 1:
        raise ConfigError(
            "media.port_max", "must be above media.port_min (each stream takes an even port and the next)"
        )
    if m.address:
        problem = _address(m.address)
        if problem:
            raise ConfigError("media.address", problem, config.source("media.address"))
    pairs, workers = (m.port_max - m.port_min + 1) // 2, config.relay_workers
    if m.shared_port:
        # counted in each worker's share as the stream service splits the range: a share starting
        # at an odd port holds one pair fewer than its length says
        parts = max(workers, 1)
        span = (m.port_max - m.port_min + 1) // parts
        shares = [m.port_min + i * span for i in range(parts)]
        fewest = min(
            len(range(lo + lo % 2, m.port_max if i == parts - 1 else lo + span - 1, 2)) for i, lo in enumerate(shares)
        )
        if fewest < 2:
            raise ConfigError(
                "media.port_max",
                f"the range {m.port_min}-{m.port_max} holds {fewest} port pairs in a relay worker's share: with "
                f"media.shared_port each worker takes one as its shared port and needs one more for TCP streams",
                config.source("media.port_max"),
            )
    if workers > pairs:
        # each worker owns a share of the range: with fewer pairs than workers start-up cannot split it
        per_core = " (media.workers = -1: one per core)" if m.workers < 0 else ""
        raise ConfigError(
            "media.port_max",
            f"the range {m.port_min}-{m.port_max} holds {pairs} port pairs, fewer than the "
            f"{workers} relay workers{per_core}: widen the range or set media.workers",
            config.source("media.port_max"),
        )
    return config


def _load_upstreams(tables: Any, source: str) -> tuple[UpstreamSection, ...]:
    """The ``[[upstream]]`` tables of a file, each checked; errors name the entry and the key."""
    if not isinstance(tables, list):
        raise ConfigError("upstream", "must be an array of tables: write each superior as [[upstream]]", source)
    known = {f.name: f for f in fields(UpstreamSection)}
    defaults = UpstreamSection()
    out: list[UpstreamSection] = []
    names: set[str] = set()
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"upstream[{index}]", "must be a table", source)
        raw_name = table.get("name")
        label = f"upstream.{raw_name}" if isinstance(raw_name, str) and raw_name else f"upstream[{index}]"
        kwargs: dict[str, Any] = {}
        for key, value in table.items():
            f = known.get(key)
            dotted = f"{label}.{key}"
            if f is None:
                close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
                hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
                raise ConfigError(dotted, f"unknown setting ({hint})", source)
            if key == "share":
                coerced = value
            else:
                coerced = _coerce(dotted, value, getattr(defaults, key), source, False, secret=f.metadata["secret"])
            check = f.metadata.get("check")
            problem = check(coerced) if check else None
            if problem:
                raise ConfigError(dotted, problem, source)
            kwargs[key] = coerced
        for required in ("name", "id", "host"):
            if not kwargs.get(required):
                raise ConfigError(f"{label}.{required}", "is required", source)
        if kwargs["name"] in names:
            raise ConfigError(f"{label}.name", "is used by another [[upstream]]: names must be unique", source)
        names.add(kwargs["name"])
        out.append(replace(defaults, **kwargs))
    return tuple(out)


def describe_options() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every option: for docs and ``gb28181gw config``."""
    rows = []
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in fields(cls):
            rows.append((f"{section}.{f.name}", getattr(defaults, f.name), f.metadata.get("help", "")))
    return rows


@dataclass(frozen=True, slots=True)
class Setting:
    """One option as the gateway will run with it (what ``gb28181gw config`` shows).

    Attributes:
        key: ``section.name``.
        value: the effective value: derived when the option is left to derive
            (:data:`DERIVED`), :data:`REDACTED` for a secret that is set.
        configured: the value as configured (redacted likewise).
        source: ``default``, the file's path, ``environment GB28181GW_…`` or ``command line --…``.
        derived: how ``value`` was derived, or ``None`` when it is the configured value.
        secret: whether the option is a secret.
        help: what the option means.
    """

    key: str
    value: Any
    configured: Any
    source: str
    derived: str | None
    secret: bool
    help: str


def _shown(value: Any, secret: bool | Callable[[str], str] | None) -> tuple[Any, bool]:
    """What of ``value`` may be shown, and whether it is (or holds) a secret that is set."""
    if callable(secret):
        masked = secret(value)
        return masked, masked != value
    if secret and value:
        return REDACTED, True
    return value, bool(secret)


def effective_settings(config: Config) -> list[Setting]:
    """Every option of ``config`` with its effective value and source, secrets redacted."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            key = f"{section}.{f.name}"
            configured = getattr(getattr(config, section), f.name)
            configured, secret = _shown(configured, f.metadata.get("secret"))
            rule = DERIVED.get(key)
            derived = rule is not None and configured == rule.unset
            rows.append(
                Setting(
                    key=key,
                    value=rule.value(config) if rule is not None and derived else configured,
                    configured=configured,
                    source=config.source(key),
                    derived=rule.how if rule is not None and derived else None,
                    secret=secret,
                    help=f.metadata.get("help", ""),
                )
            )
    derive = {
        "domain": config.upstream_domain,
        "local_id": config.upstream_local_id,
        "username": config.upstream_username,
    }
    for index, up in enumerate(config.upstreams):
        for f in fields(UpstreamSection):
            configured = getattr(up, f.name)
            configured, secret = _shown(configured, f.metadata.get("secret"))
            how = UPSTREAM_DERIVED.get(f.name) if configured == "" else None
            rows.append(
                Setting(
                    key=f"{up.label(index)}.{f.name}",
                    value=derive[f.name](up) if how else configured,
                    configured=configured,
                    source=config.file or DEFAULT_SOURCE,
                    derived=how,
                    secret=secret,
                    help=f.metadata.get("help", ""),
                )
            )
    return rows


class Concern(StrEnum):
    """What a :class:`ConfigWarning` is about (stable names for tests and ``--json``)."""

    OPEN_REGISTRATION = "open-registration"
    LOOPBACK_ADVERTISED = "loopback-advertised"
    UNUSABLE_ADDRESS = "unusable-address"
    LOOPBACK_ONLY = "loopback-only"
    GATEWAY_ID_TYPE = "gateway-id-type"
    GATEWAY_ID_ODDITY = "gateway-id-oddity"
    DOMAIN_MISMATCH = "domain-mismatch"
    ADMIN_EXPOSED = "admin-exposed"
    LISTEN_OVERLAP = "listen-overlap"
    PORT_CLASH = "port-clash"
    DIGEST_ALGORITHM = "digest-algorithm"
    READABLE_SECRET = "readable-secret"


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A configuration that loads but will probably not do what its author wants.

    Attributes:
        concern: what kind of problem.
        key: the option to look at.
        message: what will happen and what to do, in words.
    """

    concern: Concern
    key: str
    message: str


def config_warnings(config: Config) -> list[ConfigWarning]:
    """Everything in ``config`` worth a warning; pure, for ``gb28181gw config`` and ``serve``'s start-up log."""
    out: list[ConfigWarning] = []

    def warn(concern: Concern, key: str, message: str) -> None:
        out.append(ConfigWarning(concern, key, message))

    c, sip, media, r = config, config.sip, config.media, config.registrar
    if not r.password and not r.require_provisioned:
        warn(
            Concern.OPEN_REGISTRATION,
            "registrar.password",
            "registration is open: no registrar.password and registrar.require_provisioned is false, so any "
            "device that knows our ID registers without a password (only devices added with their own password "
            "need one); set registrar.password, or require_provisioned and add devices with --password",
        )
    wildcard_sip = [a for a in sip.listen if is_wildcard(a)]
    for key, address, wildcards, follower in (
        ("sip.advertised_address", sip.advertised_address, wildcard_sip, "" if media.address else "media.address"),
        ("media.address", media.address, [media.listen] if is_wildcard(media.listen) else [], ""),
    ):
        if not address:
            continue  # derived per device
        if is_wildcard(address):
            warn(
                Concern.UNUSABLE_ADDRESS,
                key,
                f"{key} {address} is no address a device can send to; set the address devices reach us at, "
                "or leave it empty to use the one each device reached",
            )
        elif is_loopback(address) and wildcards:
            also = f" ({follower} follows it)" if follower else ""
            warn(
                Concern.LOOPBACK_ADVERTISED,
                key,
                f"{key} {address} is a loopback address while listening on {', '.join(wildcards)}: devices on "
                f"other hosts are told to send to themselves{also}; set the address they reach us at, or leave "
                "it empty to use the one each device reached",
            )
        elif key == "sip.advertised_address" and _address(address) and not media.address:
            warn(
                Concern.UNUSABLE_ADDRESS,
                "media.address",
                f"sip.advertised_address {address!r} is not an IP address and media.address follows it, but "
                "an SDP offer needs an IP: set media.address",
            )
    if all(is_loopback(a) for a in sip.listen):
        warn(
            Concern.LOOPBACK_ONLY,
            "sip.listen",
            f"SIP listens only on {', '.join(sip.listen)}: devices on other hosts cannot reach it; "
            "listen on 0.0.0.0 (and :: for IPv6) or on the address devices use",
        )
    try:
        gid = GbId.parse(c.gateway.id)
    except IdError:  # pragma: no cover - load_config checked it
        gid = None
    if gid is not None:
        if gid.type_code != 200:
            warn(
                Concern.GATEWAY_ID_TYPE,
                "gateway.id",
                f"gateway.id {gid.value} has type {gid.value[10:13]} ({type_name(gid.type_code)}), not 200 (SIP "
                "server): devices and upper platforms expect a platform's ID; digits 11-13 should be 200",
            )
        for oddity in gid.warnings:
            warn(Concern.GATEWAY_ID_ODDITY, "gateway.id", f"gateway.id {gid.value}: {oddity}")
    if c.gateway.domain and c.gateway.domain != c.gateway.id[:10]:
        warn(
            Concern.DOMAIN_MISMATCH,
            "gateway.domain",
            f"gateway.domain {c.gateway.domain} is not the first 10 digits of gateway.id ({c.gateway.id[:10]}): "
            "devices must be given this domain, not the one their ID form suggests"
            + (
                ", and REGISTERs for the other are refused (registrar.check_request_domain)"
                if r.check_request_domain
                else ""
            ),
        )
    if c.admin.enabled and not is_loopback(c.admin.listen) and not c.admin.tls_cert:
        warn(
            Concern.ADMIN_EXPOSED,
            "admin.listen",
            f"the admin API listens on {c.admin.listen}:{c.admin.port} over plain HTTP: its tokens cross the "
            "network in clear, and whoever sees one can use it; set admin.tls_cert and admin.tls_key, or keep "
            "it on 127.0.0.1 or a management network behind a firewall",
        )
    for family in (4, 6):
        addresses = [a for a in sip.listen if ipaddress.ip_address(a).version == family]
        wild = [a for a in addresses if is_wildcard(a)]
        if wild and len(addresses) > 1 or len(set(addresses)) < len(addresses):
            warn(
                Concern.LISTEN_OVERLAP,
                "sip.listen",
                f"sip.listen has {', '.join(addresses)}: "
                + (f"{wild[0]} already covers every IPv{family} address" if wild else "an address twice")
                + f", so binding port {sip.port} twice fails start-up (address already in use); list it once",
            )
    in_range = range(media.port_min, media.port_max + 1)
    if sip.port in in_range:
        warn(
            Concern.PORT_CLASH,
            "media.port_min",
            f"the media range {media.port_min}-{media.port_max} includes sip.port {sip.port}: move one of them",
        )
    if c.admin.enabled and c.admin.port in in_range:
        warn(
            Concern.PORT_CLASH,
            "media.port_min",
            f"the media range {media.port_min}-{media.port_max} includes admin.port {c.admin.port}: move one of them",
        )
    if c.admin.enabled and c.admin.port == sip.port and c.admin.port != 0 and "tcp" in sip.transports:
        warn(
            Concern.PORT_CLASH,
            "admin.port",
            f"admin.port and sip.port are both {sip.port}: SIP over TCP and the admin API cannot share it",
        )
    in_file = [s.key for s in effective_settings(c) if s.secret and s.configured and s.source == c.file]
    if in_file and c.file_mode & 0o007:
        warn(
            Concern.READABLE_SECRET,
            in_file[0],
            f"{c.file} holds {', '.join(in_file)} and every user of this host can read it "
            f"(mode {c.file_mode:o}): chmod 600, or 640 for the service's group",
        )
    if r.digest_algorithm != "MD5":
        warn(
            Concern.DIGEST_ALGORITHM,
            "registrar.digest_algorithm",
            f"registrar.digest_algorithm is {r.digest_algorithm}: most cameras and NVRs answer only MD5 "
            "challenges and will fail to register",
        )
    return out
