"""What to do with a superior's query or control (cascade, PROTOCOL.md §9.4, §9.7): the policy, without I/O.

A superior addresses a MANSCDP request to our platform ID, or to a device or channel ID it
learnt from our catalog. :func:`decide` takes the decoded body, what the shell found its
DeviceID to be (:class:`Target`) and the commands the superior is allowed, and says what
to do (:class:`Verdict`), in this order:

1. A ``<Response>`` (to an alarm we sent up) or a ``<Notify>`` is taken: 200.
2. A Catalog query is not ours (the catalog service owns it), nor a query or control other
   than those of §9.4 and §9.7: 501.
3. A target we do not have, or one this superior may not see, is 404 (wvp does the same):
   a superior learns nothing about what is not shared with it.
4. A command that can take a site down — ``TeleBoot`` (aimed at our platform or at a channel:
   a channel's TeleBoot reboots its whole NVR), ``DeviceConfig``, ``DeviceUpgrade``,
   ``FormatSDCard`` — is 403 unless the superior's ``allow_commands`` lists it.
5. Our platform ID: DeviceInfo and DeviceStatus are answered by us; anything else gets a
   ``Result ERROR`` Response when the command has one. An allowed TeleBoot of the gateway
   is taken (200) and not acted on: restarting the gateway is its operator's decision
   (systemd, ``gb28181gw serve``), not a superior's, and the standard's TeleBoot has no
   Response to carry a refusal in.
6. A device or channel it may see: forwarded to the owning device with our own SN, the
   DeviceID and the payload unchanged; its answer comes back with the superior's SN
   (:func:`gb28181gw.manscdp.messages.restamp`). RecordInfo answers are multi-message and
   are collected, then sent up again in batches whose SumNum is what is sent
   (:func:`record_parts`); a ConfigDownload of several types is asked one type at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, auto

from gb28181gw.manscdp.messages import CatalogItem, CmdType, Envelope, Fields, Root, encode_list

from .cascade_catalog import Parts, run_steps, split_parts

__all__ = [
    "DANGEROUS_COMMANDS",
    "Action",
    "Target",
    "Verdict",
    "dangerous_command",
    "decide",
    "expects_response",
    "record_parts",
]

#: The commands a superior must be allowed to send (``[[upstream]] allow_commands``).
DANGEROUS_COMMANDS = ("TeleBoot", "DeviceConfig", "DeviceUpgrade", "FormatSDCard")

#: DeviceControl sub-commands the device answers with a ``<Response>`` (PROTOCOL.md §5.6.1).
_CONTROLS_WITH_RESPONSE = frozenset({"recordcmd", "guardcmd", "alarmcmd", "homeposition", "deviceupgrade"})
#: DeviceControl sub-commands that can take a site down.
_DANGEROUS_CONTROLS = {"teleboot": "TeleBoot", "deviceupgrade": "DeviceUpgrade", "formatsdcard": "FormatSDCard"}
#: What is relayed to devices: the queries and controls of PROTOCOL.md §9.4 and §9.7.
_RELAYED = {
    Root.QUERY: frozenset(
        c.value.lower()
        for c in (
            CmdType.DEVICE_INFO,
            CmdType.DEVICE_STATUS,
            CmdType.RECORD_INFO,
            CmdType.CONFIG_DOWNLOAD,
            CmdType.PRESET_QUERY,
        )
    ),
    Root.CONTROL: frozenset(c.value.lower() for c in (CmdType.DEVICE_CONTROL, CmdType.DEVICE_CONFIG)),
}
#: Elements of every envelope, never a sub-command.
_ENVELOPE = frozenset({"cmdtype", "sn", "deviceid", "extrainfo", "info"})


class Target(Enum):
    """What a request's DeviceID is, as the shell found it."""

    OURS = auto()  # our platform ID toward this superior (its local_id, or gateway.id)
    VISIBLE = auto()  # a device or channel we have that this superior may see
    HIDDEN = auto()  # one we have that it may not see
    UNKNOWN = auto()  # nothing we have


class Action(Enum):
    """What to do with a superior's request."""

    REJECT = auto()  # answer the MESSAGE with Verdict.status, nothing else
    TAKE = auto()  # 200, nothing else (a Response to us, a Notify, an allowed TeleBoot of the gateway)
    ANSWER = auto()  # 200, then our own Response (DeviceInfo / DeviceStatus of our platform, Result ERROR)
    FORWARD = auto()  # 200, then one request to the device and its Response relayed
    FORWARD_RECORDS = auto()  # 200, then RecordInfo collected from the device and sent up re-batched
    FORWARD_CONFIG = auto()  # 200, then one ConfigDownload per ConfigType, each Response relayed


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`decide` says.

    Attributes:
        action: what to do.
        status: the SIP status for the superior's MESSAGE (200 unless rejected).
        reason: why, for the log and the rejection's Warning header.
        command: the dangerous command the request carries (``""``: none).
        response: whether the device (or we) answer with a ``<Response>``.
    """

    action: Action
    status: int = 200
    reason: str = ""
    command: str = ""
    response: bool = True


def dangerous_command(env: Envelope) -> str:
    """The dangerous command ``env`` carries, as ``allow_commands`` names it (``""``: none)."""
    if env.is_cmd(CmdType.DEVICE_CONFIG):
        return "DeviceConfig"
    if env.is_cmd(CmdType.DEVICE_CONTROL):
        for name in _sub_commands(env):
            if name in _DANGEROUS_CONTROLS:
                return _DANGEROUS_CONTROLS[name]
    return ""


def expects_response(env: Envelope) -> bool:
    """Whether the answer to ``env`` includes a ``<Response>`` MESSAGE (§5.3: queries, DeviceConfig,
    DeviceControl with RecordCmd, GuardCmd, AlarmCmd, HomePosition or DeviceUpgrade)."""
    if env.root is Root.QUERY or env.is_cmd(CmdType.DEVICE_CONFIG):
        return True
    if env.root is Root.CONTROL:
        return any(name in _CONTROLS_WITH_RESPONSE for name in _sub_commands(env))
    return False


def decide(env: Envelope, target: Target, *, allowed: frozenset[str] | tuple[str, ...] = ()) -> Verdict:
    """What to do with the superior's request ``env`` addressed to ``target`` (see the module docstring)."""
    if env.root is Root.RESPONSE or env.root is Root.NOTIFY:
        return Verdict(Action.TAKE, response=False)
    if env.is_cmd(CmdType.CATALOG) or not _relayed(env):
        return Verdict(Action.REJECT, 501, f"{env.root.value} {env.cmd_type} is not served to superiors here")
    if target is Target.UNKNOWN:
        return Verdict(Action.REJECT, 404, f"no device or channel {env.device_id} here")
    if target is Target.HIDDEN:
        return Verdict(Action.REJECT, 404, f"{env.device_id} is not shared with this platform")
    response = expects_response(env)
    command = dangerous_command(env)
    if command and command not in allowed:
        return Verdict(
            Action.REJECT, 403, f"{command} is not allowed from this platform (allow_commands)", command, response
        )
    if target is Target.OURS:
        if env.root is Root.QUERY and (env.is_cmd(CmdType.DEVICE_INFO) or env.is_cmd(CmdType.DEVICE_STATUS)):
            return Verdict(Action.ANSWER, command=command)
        if command == "TeleBoot":
            return Verdict(
                Action.TAKE,
                reason="the gateway does not restart on a superior's request",
                command=command,
                response=False,
            )
        if response:
            return Verdict(
                Action.ANSWER, reason=f"{env.cmd_type} is not served for the platform itself", command=command
            )
        return Verdict(
            Action.TAKE, reason=f"{env.cmd_type} is not served for the platform itself", command=command, response=False
        )
    if env.root is Root.QUERY and env.is_cmd(CmdType.RECORD_INFO):
        return Verdict(Action.FORWARD_RECORDS, command=command)
    if env.root is Root.QUERY and env.is_cmd(CmdType.CONFIG_DOWNLOAD):
        return Verdict(Action.FORWARD_CONFIG, command=command)
    return Verdict(Action.FORWARD, command=command, response=response)


def record_parts(
    device_id: str,
    sn: int,
    items: list[CatalogItem],
    *,
    batch: int,
    charset: str,
    head: Fields | None = None,
    limit: int | None = None,
) -> Parts:
    """A RecordInfo answer written again for the superior: ``batch`` items per message (fewer when
    a body would exceed ``limit`` bytes), its SN, and SumNum the number of items sent in all
    (consistent across the parts, whatever the device claimed: PROTOCOL.md §9.4). No items: one
    message with SumNum 0 and no list (Annex M). Split as a catalog is (:func:`split_parts`)."""
    bodies: list[Fields] = [[("DeviceID", item.device_id), *item.fields.items()] for item in items]

    def encode(chunk: Sequence[Fields], total: int, index: int) -> bytes:
        return encode_list(
            CmdType.RECORD_INFO, sn, device_id, head or [], "RecordList", list(chunk), sum_num=total, charset=charset
        )

    return run_steps(split_parts(bodies, encode, batch=batch, limit=limit))


def _relayed(env: Envelope) -> bool:
    return env.cmd_type.lower() in _RELAYED.get(env.root, frozenset())


def _sub_commands(env: Envelope) -> list[str]:
    return [
        child.tag.lower() for child in env.element if isinstance(child.tag, str) and child.tag.lower() not in _ENVELOPE
    ]
