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
import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gb28181gw.errors import ConfigError, IdError
from gb28181gw.ids import GbId

ENV_PREFIX = "GB28181GW_"
#: Variables with our prefix that are not settings: the config file and the CLI's admin URL.
NOT_SETTINGS = frozenset({"GB28181GW_CONFIG", "GB28181GW_ADMIN_URL"})


def _opt(default: Any, help: str, check: Callable[[Any], str | None] | None = None) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "check": check})
    return field(default=default, metadata={"help": help, "check": check})


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be a port number from 0 to 65535"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _at_least(n: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= n else f"must be at least {n}"


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


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        values = v if isinstance(v, list) else [v]
        bad = [x for x in values if x not in choices]
        return f"must be one of {', '.join(choices)} (got {', '.join(map(str, bad))})" if bad else None

    return check


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
        "", "address put in our Via/Contact; empty = the listen address, or 127.0.0.1 for a wildcard"
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
    bad = [x for x in v if not (x.isdigit() and x.isascii() and 1 <= len(x) <= 20)]
    return f"ID prefixes must be 1-20 digits (got {', '.join(bad)})" if bad else None


@dataclass(frozen=True, slots=True)
class RegistrarSection:
    """Device registration and liveness (GB/T 28181 §9.1, §9.6)."""

    password: str = _opt("", "global digest password; empty with no per-device password = open registration")
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
    allow_ids: list[str] = _opt([], "ID prefixes allowed to register (empty = all)", _id_prefixes)
    deny_ids: list[str] = _opt([], "ID prefixes refused", _id_prefixes)
    allow_networks: list[str] = _opt([], "source networks allowed (CIDR; empty = all)", _networks)
    deny_networks: list[str] = _opt([], "source networks refused (CIDR)", _networks)
    keepalive_interval: int = _opt(60, "expected heartbeat interval (s) when a device's own is unknown", _at_least(1))
    keepalive_count: int = _opt(3, "missed heartbeats before a device is offline", _at_least(1))
    accept_port_change: bool = _opt(
        True, "a MESSAGE from the registered IP but another port moves the device there (NAT rebinding)"
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


def _workers(v: int) -> str | None:
    return None if v >= -1 else "must be -1 (one per core), 0 (in the gateway's process) or a number of processes"


@dataclass(frozen=True, slots=True)
class MediaSection:
    """Live streams: INVITE to devices and the RTP relay (PROTOCOL.md §7, §8)."""

    address: str = _opt(
        "", "media IP put in our SDP (where devices send); empty = sip.advertised_address or the listen address"
    )
    listen: str = _opt("0.0.0.0", "address media sockets bind to", _address)
    port_min: int = _opt(30000, "first media port (RTP uses even ports)", _port)
    port_max: int = _opt(31999, "last media port", _port)
    workers: int = _opt(-1, "relay worker processes: -1 = one per core, 0 = in the gateway's process", _workers)
    stream_mode: str = _opt(
        "udp", "how devices without their own mode send media", _one_of("udp", "tcp-passive", "tcp-active")
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
    port_quarantine: float = _opt(5.0, "seconds a released port rests before reuse (late packets)", _at_least(0))
    ssrc_quarantine: float = _opt(15.0, "seconds a released SSRC rests before reuse (M3)", _at_least(0))
    stats_interval: float = _opt(
        1.0, "seconds between relay workers' reports (bitrate, loss, media timeout)", _positive
    )
    consumer_networks: list[str] = _opt(
        [], "networks (CIDR) the admin API may send streams to besides the requester's own address", _networks
    )


@dataclass(frozen=True, slots=True)
class StoreSection:
    """Where state is kept."""

    backend: str = _opt("sqlite", "sqlite (embedded file); redis comes with multi-node support", _one_of("sqlite"))
    path: str = _opt("gb28181gw.db", "SQLite file (relative to the working directory)")
    flush_interval: float = _opt(0.5, "seconds between batched writes of changed devices", _positive)


@dataclass(frozen=True, slots=True)
class AdminSection:
    """The HTTP admin API, /metrics and health checks."""

    enabled: bool = _opt(True, "serve the admin API")
    listen: str = _opt("127.0.0.1", "address of the admin API (keep it on loopback or a management network)", _address)
    port: int = _opt(8028, "port of the admin API", _port)
    allowed_hosts: list[str] = _opt(
        [], "host names the API answers to besides localhost and IP addresses (DNS-rebinding guard)"
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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    gateway: GatewaySection = field(default_factory=GatewaySection)
    sip: SipSection = field(default_factory=SipSection)
    registrar: RegistrarSection = field(default_factory=RegistrarSection)
    devices: DevicesSection = field(default_factory=DevicesSection)
    media: MediaSection = field(default_factory=MediaSection)
    store: StoreSection = field(default_factory=StoreSection)
    admin: AdminSection = field(default_factory=AdminSection)
    log: LogSection = field(default_factory=LogSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)

    @property
    def domain(self) -> str:
        """The SIP domain / realm: explicit, or the first 10 digits of our ID."""
        return self.gateway.domain or self.gateway.id[:10]


SECTIONS: dict[str, Any] = {
    "gateway": GatewaySection,
    "sip": SipSection,
    "registrar": RegistrarSection,
    "devices": DevicesSection,
    "media": MediaSection,
    "store": StoreSection,
    "admin": AdminSection,
    "log": LogSection,
    "runtime": RuntimeSection,
}


def _coerce(key: str, value: Any, target: Any, source: str, text: bool) -> Any:
    """Turn ``value`` (typed from TOML, or ``text`` from env/flags) into ``target``'s type."""
    kind = type(target)
    if text and isinstance(value, str) and kind is not str:
        stripped = value.strip()
        if kind is bool:
            low = stripped.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(key, f"must be true or false (got {value!r})", source)
        if kind is int:
            try:
                return int(stripped)
            except ValueError:
                raise ConfigError(key, f"must be an integer (got {value!r})", source) from None
        if kind is float:
            try:
                return float(stripped)
            except ValueError:
                raise ConfigError(key, f"must be a number (got {value!r})", source) from None
        if kind is list:
            return [part.strip() for part in stripped.split(",") if part.strip()]
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false (got {value!r})", source)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(key, f"must be an integer (got {value!r})", source)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number (got {value!r})", source)
        return float(value)
    if kind is str and not isinstance(value, str):
        raise ConfigError(key, f"must be a string (got {value!r})", source)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(key, f"must be a list of strings (got {value!r})", source)
        return list(value)
    return value


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from defaults, a TOML file, the environment and overrides.

    Args:
        path: TOML file; ``None`` uses ``GB28181GW_CONFIG`` if set, else defaults only.
        env: environment to read (default ``os.environ``).
        overrides: ``{"section.key": "value"}`` from the command line; highest precedence.

    Raises:
        ConfigError: naming the first bad key, why, and where the value came from.
    """
    env = os.environ if env is None else env
    values: dict[str, dict[str, tuple[Any, str, bool]]] = {name: {} for name in SECTIONS}
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config", f"file {str(p)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("config", f"cannot read {str(p)!r}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{str(p)!r} is not valid TOML: {exc}") from None
        for section, table in data.items():
            if section not in SECTIONS:
                raise ConfigError(section, f"unknown section (known: {', '.join(SECTIONS)})", str(p))
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
            raise ConfigError(name, f"unknown setting (sections: {', '.join(SECTIONS)})", "environment")
        values[env_section][rest[len(env_section) + 1 :]] = (value, f"environment {name}", True)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(dotted, "expected section.key", "command line")
        values[section][key] = (value, "command line", True)

    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        defaults = cls()
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, (value, source, is_text) in values[section].items():
            f = known.get(key)
            dotted = f"{section}.{key}"
            if f is None:
                raise ConfigError(dotted, f"unknown setting (known: {', '.join(known)})", source)
            coerced = _coerce(dotted, value, getattr(defaults, key), source, is_text)
            check = f.metadata.get("check")
            problem = check(coerced) if check else None
            if problem:
                raise ConfigError(dotted, problem, source)
            kwargs[key] = coerced
        built[section] = replace(defaults, **kwargs)
    config = Config(**built)
    if config.sip.t2 < config.sip.t1:
        raise ConfigError("sip.t2", "must not be smaller than sip.t1")
    r = config.registrar
    if not r.expires_min <= r.expires_default <= r.expires_max:
        raise ConfigError("registrar.expires_default", "must lie between registrar.expires_min and expires_max")
    m = config.media
    if m.port_max - m.port_min < 1:
        raise ConfigError(
            "media.port_max", "must be above media.port_min (each stream takes an even port and the next)"
        )
    if m.address:
        problem = _address(m.address)
        if problem:
            raise ConfigError("media.address", problem)
    return config


def describe_options() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every option: for docs and ``gb28181gw config``."""
    rows = []
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in fields(cls):
            rows.append((f"{section}.{f.name}", getattr(defaults, f.name), f.metadata.get("help", "")))
    return rows
