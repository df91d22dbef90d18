"""Our catalog as one superior sees it (cascade; GB/T 28181-2022 Annex J, M, N; PROTOCOL.md §9.3, §5.5, §6.2, §9.8).

Sans-I/O: records in, items and body bytes out.

- :func:`build_view` makes the tree a superior may see from the stored channels, the
  devices' liveness, its :class:`~gb28181gw.gb.share.ShareRule` and its overrides:
  optionally our platform first (Annex H), then the civil-code nodes of what is shared
  (2, 4, 6, 8 digits; named when a device reported the region, else by the code), the
  business groups (215) and virtual organisations (216) devices reported, then the shared
  channels with Parental, ParentID and a Status that is ``OFF`` whenever their device is
  offline. IDs are never changed (§9.9); an override changes only a name, civil code or
  parent (an overridden parent brings its group or organisation along, as a reported one
  does). A ParentID naming something the superior does not see, reported or overridden,
  becomes our platform ID (the system that owns the channel, §9.3), since a dangling parent
  makes superiors misplace or miscount the item (§5.5.3 step 4).
- :meth:`View.scope` is the answer to a Catalog query for one DeviceID (§5.5.4): our ID
  gives everything, a region, group, organisation or item its subtree, a device of ours
  its shared channels, anything else ``None`` (the shell answers 404).
- :func:`response_bodies` splits the answer into MESSAGE bodies of ``batch`` items, same
  SN, ``SumNum`` = the total, ``DeviceList Num`` = the items of that message (§5.5.5).
- :func:`diff` says what changed between two views as catalog events (ADD, DEL, UPDATE,
  ON, OFF, §6.2), and :func:`notify_bodies` writes them as NOTIFY bodies (``SumNum`` =
  ``Num`` of that message, 2022 Annex N).
- :class:`Pacer` sends the messages of one stream serially: the next after the previous
  one's 2xx, or after :data:`FALLBACK_PACE` when the superior does not answer (wvp does
  the same), and never again after a final error or once the superior is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum, auto
from typing import TypeVar

from gb28181gw.errors import LocalProtocolError
from gb28181gw.manscdp.messages import CmdType, Fields, Root, encode

from .model import Channel, Override
from .share import ShareRule

__all__ = [
    "FALLBACK_PACE",
    "HEADER_ROOM",
    "STEP",
    "UDP_BODY_LIMIT",
    "Change",
    "Event",
    "Identity",
    "Item",
    "Kind",
    "Pacer",
    "PacerState",
    "Parts",
    "Steps",
    "View",
    "body_limit",
    "build_view",
    "build_view_steps",
    "diff",
    "diff_steps",
    "notify_bodies",
    "notify_steps",
    "offline_changes",
    "response_bodies",
    "response_steps",
    "run_steps",
    "split_parts",
]

#: Seconds after which the next message goes although the previous one is unanswered (wvp
#: falls back to 30-100 ms; we wait longer so that a slow superior still gets them in order).
FALLBACK_PACE = 0.5

#: Item fields written at item level, in this order, when the device reported them; those
#: with a default are always written (the mandatory device fields of §5.5.2, C7 defaults).
_TOP_FIELDS: tuple[tuple[str, str | None], ...] = (
    ("Manufacturer", ""),
    ("Model", ""),
    ("Owner", None),
    ("CivilCode", ""),
    ("Block", None),
    ("Address", ""),
    ("Parental", "0"),
    ("ParentID", ""),
    ("SafetyWay", None),
    ("RegisterWay", "1"),
    ("SecurityLevelCode", None),
    ("CertNum", None),
    ("Certifiable", None),
    ("ErrCode", None),
    ("EndTime", None),
    ("Secrecy", "0"),
    ("IPAddress", None),
    ("Port", None),
    ("Status", "ON"),
    ("Longitude", None),
    ("Latitude", None),
    ("BusinessGroupID", None),
)
#: Fields that go inside ``<Info>`` (the catalog parser flattens them, §5.5.2).
_INFO_FIELDS = (
    "PTZType", "PositionType", "PhotoelectricImagingType", "CapturePositionType", "RoomType", "UseType",
    "SupplyLightType", "DirectionType", "Resolution", "StreamNumberList", "DownloadSpeed", "SVCSpaceSupportMode",
    "SVCTimeSupportMode", "SSVCRatioSupportList", "MobileDeviceType", "HorizontalFieldAngle", "VerticalFieldAngle",
    "MaxViewDistance", "GrassrootsCode", "PointType", "PointCommonName", "MAC", "FunctionType", "EncodeType",
    "InstallTime", "ManagementUnit", "ContactInfo", "RecordSaveDays", "IndustrialClassification",
)  # fmt: skip
_REGION_LENGTHS = (2, 4, 6, 8)

#: Items a stepped build, diff or encoding handles between two yields. An item costs 10-20 µs
#: per step (build, diff, encode), so a step is a few milliseconds: the shell's loop, which
#: drives the steps, never holds SIP traffic back longer than that, whatever the catalog size.
STEP = 256

#: Largest body sent to a superior over UDP (bytes). The hard ceiling is a UDP datagram
#: (65,507 bytes), but every fragment of an IP-fragmented datagram must arrive for any of it
#: to, and stacks that size their buffers for what GB devices send (2-8 KB MESSAGEs over UDP,
#: PROTOCOL.md §2.2, R6; pjsip's default packet limit is 4,000) drop larger ones. 8 KiB keeps
#: us within what superiors already take from devices; ``catalog_batch`` stays the knob for
#: smaller messages (PROTOCOL.md §2.2: 1-4 items to stay under the MTU), and the default
#: batch of 4 is far below this limit, so it only splits a batch an operator made too big.
UDP_BODY_LIMIT = 8192
#: Room left in a message for its start line and headers (a MESSAGE or an in-dialog NOTIFY
#: has 500-700 bytes of them).
HEADER_ROOM = 1024

T = TypeVar("T")
#: A stepped computation: a generator that yields (``None``) between steps of :data:`STEP`
#: items and returns its result (``StopIteration.value``); :func:`run_steps` runs one whole.
Steps = Generator[None, None, T]


def run_steps(steps: Steps[T]) -> T:
    """The result of a stepped computation, run at once."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class Kind(StrEnum):
    """What an item of the tree is (Annex J, PROTOCOL.md §5.5.3)."""

    PLATFORM = "platform"  # our own system item (type 200)
    REGION = "region"  # a 2/4/6/8-digit civil code
    GROUP = "group"  # a business group (215)
    ORG = "org"  # a virtual organisation (216)
    CHANNEL = "channel"  # a device or channel


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog item as a superior gets it.

    Attributes:
        device_id: its ID (unchanged from what the device reported).
        kind: what it is.
        fields: the elements after ``DeviceID``, in wire order (``Info`` nested).
        parents: the IDs it hangs under in this tree (ParentID values and BusinessGroupID).
        civil_code: its region ("" for organisations and regions themselves).
        owner: the device that reported it ("" for our own items).
        status: ``ON``/``OFF`` for platform and channels, "" otherwise.
    """

    device_id: str
    kind: Kind
    fields: Fields = field(compare=True)
    parents: tuple[str, ...] = ()
    civil_code: str = ""
    owner: str = ""
    status: str = ""


@dataclass(frozen=True, slots=True)
class Identity:
    """Us, toward one superior.

    Attributes:
        local_id: our platform ID toward it.
        name: our name in its tree.
        platform_item: whether the tree starts with our platform item (``[[upstream]] platform_item``).
        manufacturer / model: what our platform item says we are.
        single_parent: write one ParentID value, the innermost (the virtual org rather than the
            device): 2016 superiors expect one; 2022 allows several joined by ``/`` (§9.3).
    """

    local_id: str
    name: str
    platform_item: bool = True
    single_parent: bool = False
    manufacturer: str = "gb28181gw"
    model: str = "gb28181gw"


def _is_region(code: str) -> bool:
    return len(code) in _REGION_LENGTHS and code.isascii() and code.isdigit()


def _type_code(item_id: str) -> str:
    return item_id[10:13] if len(item_id) == 20 else ""


@dataclass(slots=True)
class View:
    """The tree one superior may see, in the order it is sent (see :func:`build_view`).

    Attributes:
        local_id: our ID toward it (a Catalog query for it gets everything).
        items: every item by ID, in order.
    """

    local_id: str
    items: dict[str, Item]
    _children: dict[str, list[str]] | None = field(default=None, repr=False)
    # the IDs in the tree a parent may name (groups, organisations, channels): a later build
    # reuses this view's channel items only while these are the same (see build_view_steps)
    _ids: frozenset[str] | set[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    def scope(self, target: str) -> list[Item] | None:
        """The items a Catalog query for ``target`` returns (§5.5.4), or ``None`` when we have no such ID."""
        if target == self.local_id:
            return list(self.items.values())
        if target in self.items:
            roots = [target]
        else:
            # a device of ours that is no item itself (an NVR): its shared channels
            roots = [i.device_id for i in self.items.values() if i.owner == target and i.kind is Kind.CHANNEL]
            if not roots:
                return None
        wanted = self._subtree(roots)
        return [item for item_id, item in self.items.items() if item_id in wanted]

    def _subtree(self, roots: list[str]) -> set[str]:
        children = self._children
        if children is None:
            children = self._children = {}
            for item in self.items.values():
                for parent in item.parents:
                    children.setdefault(parent, []).append(item.device_id)
                if item.civil_code and item.kind is not Kind.REGION:
                    children.setdefault(item.civil_code, []).append(item.device_id)
                if item.kind is Kind.REGION and len(item.device_id) > 2:
                    children.setdefault(item.device_id[:-2], []).append(item.device_id)
        seen = set(roots)
        todo = list(roots)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen


def build_view(
    identity: Identity,
    channels: Iterable[Channel],
    *,
    online: Callable[[str], bool],
    rule: ShareRule,
    overrides: Mapping[str, Override] | None = None,
    previous: View | None = None,
    changed: Collection[str] = (),
) -> View:
    """The tree the superior may see (see the module docstring).

    Args:
        identity: us toward it.
        channels: every stored channel (catalog item) of every device.
        online: whether a device is online (a channel of an offline device is OFF).
        rule: what it may see.
        overrides: its overrides by channel ID.
        previous / changed: reuse of an earlier build (:func:`build_view_steps`).
    """
    return run_steps(
        build_view_steps(
            identity, channels, online=online, rule=rule, overrides=overrides, previous=previous, changed=changed
        )
    )


def build_view_steps(
    identity: Identity,
    channels: Iterable[Channel],
    *,
    online: Callable[[str], bool],
    rule: ShareRule,
    overrides: Mapping[str, Override] | None = None,
    previous: View | None = None,
    changed: Collection[str] = (),
) -> Steps[View]:
    """:func:`build_view` in steps of :data:`STEP` channels (a 10,000-channel tree takes ~150 ms).

    ``channels`` is read as the steps go: pass a list (the stored dicts may change between
    steps), and the channels as they are when read are what the view shows; a change made
    meanwhile is the next build's.

    Args:
        previous: the view last built for this superior with the same ``identity``, ``rule``
            and ``overrides``. Its channel items are reused for every device not in
            ``changed``, as long as the IDs a parent may name are the same (a channel's
            ParentID depends on them): a device going offline or re-reporting its catalog
            among 10,000 channels builds 100 items, not 10,000 (and leaves no 10,000 new
            objects for the garbage collector to walk).
        changed: the devices whose channels or liveness changed since ``previous``.
    """
    overrides = overrides or {}
    local_id = identity.local_id
    own_region = local_id[:6]
    region_names: dict[str, str] = {}
    groups: dict[str, Channel] = {}
    orgs: dict[str, Channel] = {}
    shared: list[Channel] = []
    for n, ch in enumerate(channels, 1):
        if not n % STEP:
            yield
        cid = ch.channel_id
        if _is_region(cid):
            region_names.setdefault(cid, ch.name)
            continue
        kind = _type_code(cid)
        if kind == "215":
            groups[cid] = ch
        elif kind == "216":
            orgs[cid] = ch
        elif rule.allows(cid, ch.device_id) and cid != local_id:
            shared.append(ch)
    yield
    shared.sort(key=lambda c: (c.device_id, c.channel_id))
    yield

    # groups and organisations: those shared, and those a shared channel (or organisation) hangs under
    wanted: set[str] = {g for g, ch in groups.items() if rule.allows(g, ch.device_id)}
    wanted |= {o for o, ch in orgs.items() if rule.allows(o, ch.device_id)}

    def references(ch: Channel) -> list[str]:
        # an overridden parent is one too: the operator's org comes along like a reported one
        return [*_references(ch), *_parents(overrides.get(ch.channel_id))]

    todo = list(wanted)
    for n, ch in enumerate(shared, 1):
        if not n % STEP:
            yield
        todo += references(ch)
    while todo:
        ref = todo.pop()
        holder = groups.get(ref) or orgs.get(ref)
        if holder is None:
            continue
        wanted.add(ref)
        todo.extend(p for p in references(holder) if p not in wanted)
    yield
    ids = wanted | {ch.channel_id for ch in shared}

    def parents_of(ch: Channel, override: Override | None, *, fallback: str | None) -> tuple[str, ...]:
        kept = tuple(p for p in (_parents(override) or ch.parent_id.split("/")) if p in ids)
        if identity.single_parent:
            kept = kept[-1:]
        return kept or ((fallback,) if fallback else ())

    def civil_of(ch: Channel, override: Override | None) -> str:
        if override is not None and override.civil_code:
            return override.civil_code
        code = ch.extra.get("CivilCode", "")
        return code if _is_region(code) else own_region

    items: dict[str, Item] = {}
    if identity.platform_item:
        items[local_id] = Item(
            local_id,
            Kind.PLATFORM,
            [("Name", identity.name or local_id), ("Manufacturer", identity.manufacturer),
             ("Model", identity.model), ("CivilCode", own_region), ("Address", ""), ("RegisterWay", "1"),
             ("Secrecy", "0"), ("Status", "ON")],
            civil_code=own_region,
            status="ON",
        )  # fmt: skip
    body: list[Item] = []
    used_regions: set[str] = set()
    for gid in sorted(g for g in wanted if g in groups):
        ch = groups[gid]
        override = overrides.get(gid)
        civil = civil_of(ch, override)
        parents = parents_of(ch, override, fallback=local_id)
        body.append(
            Item(
                gid,
                Kind.GROUP,
                [("Name", _name(ch, override)), ("CivilCode", civil), ("ParentID", "/".join(parents))],
                parents=parents,
                civil_code=civil,
                owner=ch.device_id,
            )
        )
        used_regions.add(civil)
    for oid in sorted(o for o in wanted if o in orgs):
        ch = orgs[oid]
        override = overrides.get(oid)
        parents = parents_of(ch, override, fallback=None)
        fields: Fields = [("Name", _name(ch, override))]
        if parents:
            fields.append(("ParentID", "/".join(parents)))
        group = ch.extra.get("BusinessGroupID", "")
        if group:
            fields.append(("BusinessGroupID", group))
        body.append(
            Item(oid, Kind.ORG, fields, parents=(*parents, *((group,) if group in ids else ())), owner=ch.device_id)
        )
    reuse = previous.items if previous is not None and previous._ids == ids else {}
    for n, ch in enumerate(shared, 1):
        if not n % STEP:
            yield
        cid = ch.channel_id
        if ch.device_id not in changed:
            prior = reuse.get(cid)
            if prior is not None and prior.kind is Kind.CHANNEL and prior.owner == ch.device_id:
                body.append(prior)
                used_regions.add(prior.civil_code)
                continue
        override = overrides.get(cid)
        civil = civil_of(ch, override)
        parents = parents_of(ch, override, fallback=local_id)
        status = "ON" if online(ch.device_id) and ch.status in ("", "ON") else "OFF"
        values = dict(ch.extra)
        values.update(CivilCode=civil, ParentID="/".join(parents), Status=status)
        fields = [("Name", _name(ch, override))]
        for name, default in _TOP_FIELDS:
            value = values.get(name, default)
            if value is not None:
                fields.append((name, value))
        info: Fields = [(name, values[name]) for name in _INFO_FIELDS if name in values]
        if info:
            fields.append(("Info", info))
        group = values.get("BusinessGroupID", "")
        body.append(
            Item(
                cid,
                Kind.CHANNEL,
                fields,
                parents=(*parents, *((group,) if group in ids else ())),
                civil_code=civil,
                owner=ch.device_id,
                status=status,
            )
        )
        used_regions.add(civil)
    for code in sorted({c[:n] for c in used_regions for n in _REGION_LENGTHS if n <= len(c)}):
        items[code] = Item(code, Kind.REGION, [("Name", region_names.get(code) or code)])
    for item in body:
        items[item.device_id] = item
    return View(local_id, items, _ids=ids)


def _references(ch: Channel) -> list[str]:
    refs = [p for p in ch.parent_id.split("/") if p]
    group = ch.extra.get("BusinessGroupID", "")
    if group:
        refs.append(group)
    return refs


def _name(ch: Channel, override: Override | None) -> str:
    return override.name if override is not None and override.name else ch.name


def _parents(override: Override | None) -> tuple[str, ...]:
    if override is None or not override.parent_id:
        return ()
    return tuple(p for p in override.parent_id.split("/") if p)


# --- bodies ------------------------------------------------------------------------------


def body_limit(transport: str, max_message_size: int) -> int:
    """The largest body we send a superior over ``transport`` (``UDP``/``TCP``).

    ``max_message_size`` is ``sip.max_message_size``: what we take from peers is what we
    send them (a gb28181gw superior refuses more); over UDP also :data:`UDP_BODY_LIMIT`.
    """
    limit = max_message_size - HEADER_ROOM
    return min(limit, UDP_BODY_LIMIT) if transport.upper() == "UDP" else limit


@dataclass(frozen=True, slots=True)
class Parts:
    """A multi-message answer or notification, split to fit (:func:`split_parts`).

    Attributes:
        bodies: the message bodies, in order.
        counts: the items in each body.
        skipped: the items too big for any message (the shell logs them by ID), in order.
    """

    bodies: list[bytes]
    counts: list[int]
    skipped: list[object] = field(default_factory=list)


def split_parts(
    items: Sequence[T], encode: Callable[[Sequence[T], int, int], bytes], *, batch: int, limit: int | None
) -> Steps[Parts]:
    """Split ``items`` into message bodies of at most ``batch`` items and ``limit`` bytes (§5.5.5, Annex M).

    The one splitting of every multi-message answer we send up (a catalog, its NOTIFYs, a
    relayed RecordInfo). A batch over ``limit`` is written again with fewer items (as many
    as its size says fit), and later batches keep that smaller size; an item too big on its
    own is skipped and named in :attr:`Parts.skipped`, never sent half or lost unsaid. The
    total passed to ``encode`` (a ``SumNum``) counts the items sent, so a superior that
    collects by SumNum is never left waiting for a skipped one.

    Args:
        items: what to send.
        encode: ``(chunk, total, index) -> body`` for part ``index`` (0-based; a part written
            again keeps its index, so an SN drawn per index is drawn once).
        batch: items per message at most (``catalog_batch``).
        limit: bytes per body at most (:func:`body_limit`), or ``None``.
    """
    total, size = len(items), max(1, batch)
    chunks: list[tuple[int, int]] = []  # (start, count) of each part
    bodies: list[bytes] = []
    skipped: list[int] = []
    start = done = 0
    while start < total:
        count = min(size, total - start)
        body = encode(items[start : start + count], total, len(bodies))
        if limit is not None and len(body) > limit:
            if count == 1:
                skipped.append(start)
                start += 1
            else:
                size = max(1, min(count - 1, count * limit // len(body)))
            continue
        chunks.append((start, count))
        bodies.append(body)
        start += count
        done += count
        if done >= STEP:
            done = 0
            yield
    if skipped:  # SumNum must count what is sent: written again with the right total
        sent = total - len(skipped)
        for index, (first, count) in enumerate(chunks):
            bodies[index] = encode(items[first : first + count], sent, index)
            if not (index + 1) % (STEP // max(1, count) or 1):
                yield
    if not bodies:
        bodies.append(encode(items[:0], 0, 0))
        chunks.append((0, 0))
    return Parts(bodies, [c for _, c in chunks], [items[i] for i in skipped])


def response_steps(
    items: list[Item], *, sn: int, device_id: str, batch: int, charset: str, limit: int | None = None
) -> Steps[Parts]:
    """The Response MESSAGE bodies of a Catalog answer (§5.5.5), split by :func:`split_parts`.

    ``batch`` items each (fewer when ``limit`` says so), the query's SN in every part, SumNum
    the items sent; one body with SumNum 0 and no list when there is nothing.

    Args:
        items: what :meth:`View.scope` returned.
        sn: the query's SN (the same in every part).
        device_id: the queried DeviceID.
        batch: items per message (``[[upstream]] catalog_batch``).
        charset: the superior's charset.
        limit: bytes per body at most (:func:`body_limit`).
    """

    def encode(chunk: Sequence[Item], total: int, index: int) -> bytes:
        return _list_body(Root.RESPONSE, sn, device_id, [_item(i) for i in chunk], total, charset)

    return split_parts(items, encode, batch=batch, limit=limit)


def response_bodies(
    items: list[Item], *, sn: int, device_id: str, batch: int, charset: str, limit: int | None = None
) -> Parts:
    """:func:`response_steps` run at once."""
    return run_steps(response_steps(items, sn=sn, device_id=device_id, batch=batch, charset=charset, limit=limit))


def _list_body(root: Root, sn: int, device_id: str, listed: list[Fields], sum_num: int, charset: str) -> bytes:
    fields: Fields = [("SumNum", sum_num)]
    if listed:  # nothing: SumNum 0 and no list (2022 Annex M)
        fields.append((f'DeviceList Num="{len(listed)}"', [("Item", i) for i in listed]))
    return encode(root, CmdType.CATALOG, sn, device_id, fields, charset=charset)


def _item(item: Item, event: Event | None = None) -> Fields:
    head: Fields = [("DeviceID", item.device_id)]
    if event is None:
        return head + item.fields
    head.append(("Event", event.value))
    return head + item.fields if event in (Event.ADD, Event.UPDATE) else head


class Event(StrEnum):
    """Catalog events a NOTIFY carries (§6.2)."""

    ON = "ON"
    OFF = "OFF"
    ADD = "ADD"
    DEL = "DEL"
    UPDATE = "UPDATE"


@dataclass(frozen=True, slots=True)
class Change:
    """One catalog event for a superior.

    Attributes:
        event: what happened.
        item: the item as it is now (as it was, for DEL).
    """

    event: Event
    item: Item


def diff(old: View, new: View) -> list[Change]:
    """What a superior that saw ``old`` must be told so that it sees ``new`` (:func:`diff_steps` run at once)."""
    return run_steps(diff_steps(old, new))


def diff_steps(old: View, new: View) -> Steps[list[Change]]:
    """What a superior that saw ``old`` must be told so that it sees ``new``, in steps of :data:`STEP` items.

    New items are ADDs and vanished ones DELs; an item whose only change is its Status is
    ON or OFF, any other change an UPDATE. ADDs and changes come in tree order (parents
    first), DELs last and children first.
    """
    changes: list[Change] = []
    before = old.items
    for n, (item_id, item) in enumerate(new.items.items(), 1):
        if not n % STEP:
            yield
        prior = before.get(item_id)
        if prior is item:
            continue  # reused by an incremental build: unchanged
        if prior is None:
            changes.append(Change(Event.ADD, item))
        elif prior != item:
            if prior.status != item.status and _without_status(prior) == _without_status(item):
                changes.append(Change(Event.ON if item.status == "ON" else Event.OFF, item))
            else:
                changes.append(Change(Event.UPDATE, item))
    gone = [item for item_id, item in before.items() if item_id not in new.items]
    changes += [Change(Event.DEL, item) for item in reversed(gone)]
    return changes


def _without_status(item: Item) -> Fields:
    return [(k, v) for k, v in item.fields if k != "Status"]


def offline_changes(view: View) -> list[Change]:
    """The first NOTIFYs of a new subscription: the items that are not online (2022 N.2.1.2.1)."""
    return [Change(Event.OFF, i) for i in view.items.values() if i.status == "OFF"]


def notify_steps(
    changes: list[Change],
    *,
    next_sn: Callable[[], int],
    device_id: str,
    batch: int,
    charset: str,
    limit: int | None = None,
) -> Steps[Parts]:
    """NOTIFY bodies for ``changes``, ``batch`` events each (``SumNum`` = ``Num``, 2022 Annex N), split by :func:`split_parts`.

    Args:
        next_sn: a fresh SN for each body (drawn once per body sent).
        device_id: our ID toward the superior.
        limit: bytes per body at most (:func:`body_limit`).
    """
    sns: list[int] = []

    def encode(chunk: Sequence[Change], total: int, index: int) -> bytes:
        while len(sns) <= index:
            sns.append(next_sn())
        return _list_body(
            Root.NOTIFY, sns[index], device_id, [_item(c.item, c.event) for c in chunk], len(chunk), charset
        )

    return split_parts(changes, encode, batch=batch, limit=limit)


def notify_bodies(
    changes: list[Change],
    *,
    next_sn: Callable[[], int],
    device_id: str,
    batch: int,
    charset: str,
    limit: int | None = None,
) -> Parts:
    """:func:`notify_steps` run at once."""
    return run_steps(
        notify_steps(changes, next_sn=next_sn, device_id=device_id, batch=batch, charset=charset, limit=limit)
    )


# --- pacing ------------------------------------------------------------------------------


class PacerState(IntEnum):
    """Where a :class:`Pacer` stands.

    IDLE: nothing queued. READY: the next message may go. WAITING: one is out, its answer
    (or :data:`FALLBACK_PACE`) awaited. STOPPED: a final error or the superior lost; nothing more goes.
    """

    IDLE = auto()
    READY = auto()
    WAITING = auto()
    STOPPED = auto()


class PacerInput(IntEnum):
    """What can happen to a :class:`Pacer`."""

    QUEUED = auto()  # more messages to send
    SENT = auto()  # the next one went
    OK = auto()  # the awaited one was answered 2xx
    NO_ANSWER = auto()  # the awaited one timed out or could not be delivered, or the fallback pace passed
    REFUSED = auto()  # any one was answered with a final error
    LOST = auto()  # the superior was lost


P, PI = PacerState, PacerInput
#: ``(state, input) -> state``; ``None`` = READY if messages are queued, else IDLE.
PACER_TRANSITIONS: dict[tuple[PacerState, PacerInput], PacerState | None] = {
    (P.IDLE, PI.QUEUED): P.READY,
    (P.READY, PI.QUEUED): P.READY,
    (P.WAITING, PI.QUEUED): P.WAITING,
    (P.READY, PI.SENT): P.WAITING,
    (P.WAITING, PI.OK): None,
    (P.WAITING, PI.NO_ANSWER): None,
    **{(s, PI.REFUSED): P.STOPPED for s in (P.IDLE, P.READY, P.WAITING)},
    **{(s, PI.LOST): P.STOPPED for s in (P.IDLE, P.READY, P.WAITING)},
}


class Pacer:
    """Serial sending of one stream of messages to a superior (§5.5.5, §6.6 step 4).

    The shell asks :attr:`ready`, sends message :meth:`sent` returns the index of, and
    reports each answer by index; an answer to a message it already moved on from only
    matters when it is an error. After STOPPED every input is ignored.

    Args:
        fallback: seconds after which an unanswered message no longer holds the next one back.
    """

    def __init__(self, *, fallback: float = FALLBACK_PACE) -> None:
        self.fallback = fallback
        self.state = P.IDLE
        self.queued = 0
        self.next_index = 0
        self.answered = 0
        self.fallbacks = 0
        self.stop_reason = ""
        self._awaited: int | None = None
        self._deadline: float | None = None

    def _fire(self, inp: PacerInput) -> None:
        if self.state is P.STOPPED:
            return
        key = (self.state, inp)
        if key not in PACER_TRANSITIONS:
            raise LocalProtocolError(f"catalog pacer in state {self.state.name} cannot take {inp.name}")
        new = PACER_TRANSITIONS[key]
        if new is None:
            new = P.READY if self.next_index < self.queued else P.IDLE
            self._awaited = self._deadline = None
        self.state = new

    @property
    def ready(self) -> bool:
        """Whether the next message may be sent now."""
        return self.state is P.READY

    @property
    def finished(self) -> bool:
        """Nothing more will be sent: all sent and the last answered (or given up on), or stopped."""
        return self.state is P.IDLE or self.state is P.STOPPED

    def push(self, count: int) -> None:
        """Queue ``count`` more messages."""
        if count > 0:
            self.queued += count
            self._fire(PI.QUEUED)

    def sent(self, now: float) -> int:
        """The next message is being sent at ``now``: its index."""
        self._fire(PI.SENT)
        index = self.next_index
        self.next_index += 1
        self._awaited = index
        self._deadline = now + self.fallback
        return index

    def receive(self, index: int, status: int | None) -> None:
        """The outcome of message ``index``: its final status, or ``None`` (timed out, undeliverable)."""
        if status is not None and status >= 300:
            self.stop_reason = f"message {index + 1} answered {status}"
            self._fire(PI.REFUSED)
            return
        if status is not None:
            self.answered += 1
        if index == self._awaited and self.state is P.WAITING:
            self._fire(PI.OK if status is not None else PI.NO_ANSWER)

    def lose(self, reason: str) -> None:
        """The superior is lost: stop."""
        self.stop_reason = reason
        self._fire(PI.LOST)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due, or ``None``."""
        return self._deadline if self.state is P.WAITING else None

    def handle_timer(self, now: float) -> None:
        """Move on when the awaited message has gone unanswered for :attr:`fallback` seconds."""
        if self.state is P.WAITING and self._deadline is not None and now >= self._deadline:
            self.fallbacks += 1
            self._fire(PI.NO_ANSWER)
