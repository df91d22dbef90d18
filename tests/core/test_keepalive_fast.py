"""The keepalive fast path (:func:`gb28181gw.manscdp.codec.keepalive_fast`) beside the general parser.

It must either decline a body or read exactly what :func:`parse_xml` and :func:`child_text` read
from it: never a keepalive the general path would refuse, never another SN, DeviceID or Status.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gb28181gw.errors import ManscdpError
from gb28181gw.manscdp import codec
from gb28181gw.manscdp.codec import KEEPALIVE_MARK, Keepalive, child_text, is_keepalive, keepalive_fast, parse_xml

DEV = "34020000001320000001"
PLAIN = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n'
    f"<DeviceID>{DEV}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
).encode()


def general(body: bytes) -> Keepalive | None:
    """What the general path reads from ``body``: a keepalive's fields, or ``None``."""
    try:
        root = parse_xml(body)
    except ManscdpError:
        return None
    sn = child_text(root, "SN") or ""
    if root.tag != "Notify" or child_text(root, "CmdType") != "Keepalive" or not sn.isdigit():
        return None
    return Keepalive(int(sn), child_text(root, "DeviceID") or "", child_text(root, "Status") or "")


def agrees(body: bytes) -> None:
    fast = keepalive_fast(body)
    assert is_keepalive(body) is (fast is not None)
    if fast is not None:
        assert general(body) == fast
        # the quick path leaves a MESSAGE without the mark unread: none it would take lacks it
        assert KEEPALIVE_MARK in body


@pytest.mark.parametrize(
    "body",
    [
        PLAIN,
        PLAIN.replace(b"\r\n", b"\n"),
        PLAIN.replace(b"\r\n", b""),
        PLAIN.replace(b"GB2312", b"UTF-8"),
        PLAIN.replace(b' encoding="GB2312"', b""),
        PLAIN.split(b"\r\n", 1)[1],  # no prolog
        PLAIN.replace(b"\r\n<", b"\r\n  <") + b"\x00\x00",  # indented, NUL padding
    ],
)
def test_plain_keepalives_take_the_fast_path(body: bytes) -> None:
    assert keepalive_fast(body) == Keepalive(43, DEV, "OK") == general(body)


@pytest.mark.parametrize(
    "change",
    [
        (b"<Notify>", b'<Notify xmlns="urn:x">'),  # attributes
        (b"<Notify>", b"<notify>"),  # lower-case names (the general path takes them)
        (b"</Notify>", b"<Info>x</Info></Notify>"),  # another element
        (b"<Status>OK</Status>", b"<Status><![CDATA[OK]]></Status>"),
        (b"<Status>OK</Status>", b"<Status>&#79;K</Status>"),  # a character reference
        (b"<SN>43</SN>", b"<SN> 43 </SN>"),  # blank space inside a text
        (b"<SN>43</SN>", b"<!-- x --><SN>43</SN>"),
        (b"GB2312", b"GBK"),
        (b'version="1.0"', b'version="1.0" standalone="yes"'),
        (b'version="1.0"', b"version=\"1.0'"),  # quotes that do not pair (lxml refuses them)
        (b'encoding="GB2312"', b"encoding='GB2312\""),
        (b"<?xml", b"\xef\xbb\xbf<?xml"),  # a byte-order mark
        (b"<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>", b"<SN>43</SN>\r\n<CmdType>Keepalive</CmdType>"),
    ],
)
def test_anything_unusual_is_left_to_lxml(change: tuple[bytes, bytes]) -> None:
    body = PLAIN.replace(*change)
    assert body != PLAIN
    assert keepalive_fast(body) is None


@pytest.mark.parametrize(
    "prolog", [b"<?xml version='1.0' encoding='GB2312'?>", b"<?xml version=\"1.0\" encoding='utf-8'?>"]
)
def test_a_prolog_quoted_either_way_takes_the_fast_path(prolog: bytes) -> None:
    body = prolog + PLAIN[PLAIN.index(b"?>") + 2 :]
    assert keepalive_fast(body) == Keepalive(43, DEV, "OK") == general(body)


@pytest.mark.parametrize(
    "prolog", [b'<?xml version="1.0\' encoding="GB2312"?>', b"<?xml version='1.0' encoding='UTF-8\"?>"]
)
def test_a_prolog_whose_quotes_do_not_pair_is_left_to_lxml_which_refuses_it(prolog: bytes) -> None:
    body = prolog + PLAIN[PLAIN.index(b"?>") + 2 :]
    assert keepalive_fast(body) is None and not is_keepalive(body)
    assert general(body) is None


def test_a_broken_keepalive_is_declined_and_refused_by_the_general_path() -> None:
    body = PLAIN.replace(b"</Notify>", b"</Notfy>")
    assert keepalive_fast(body) is None and general(body) is None


# pieces a keepalive is made of, and variations devices (or fuzzers) make of them
_BLANK = st.sampled_from([b"", b"\r\n", b"\n", b" ", b"\t", b"  \r\n", b"\x00", b"\xef\xbb\xbf", b"x"])
_PROLOG = st.sampled_from(
    [b"", b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="GB2312"?>', b"<?xml version='1.0' encoding='utf-8'?>",
     b'<?xml version="1.0" encoding="GBK"?>', b'<?xml version="1.1"?>', b"<?xml?>", b'<?xml version="1.0" encoding="UTF-8"']
)  # fmt: skip
_TEXT = st.one_of(
    st.from_regex(rb"\A[0-9A-Za-z]{0,40}\Z", fullmatch=True),
    st.binary(max_size=12),
    st.sampled_from(
        [b"&amp;", b"&lt;", b"<![CDATA[1]]>", b"\xe4\xb8\x80", b"\xd2\xbb", b"\xef\xbc\x91", b"1 2", b" 7"]
    ),
)
_TAG = st.sampled_from([b"Notify", b"notify", b"CmdType", b"SN", b"DeviceID", b"Status", b"Query", b"X"])


_OK_BLANK = st.sampled_from([b"", b"\r\n", b"\n", b" ", b"\t", b"\r\n  "])
_OK_PROLOG = st.sampled_from(
    [
        b"",
        b'<?xml version="1.0"?>',
        b'<?xml version="1.0" encoding="GB2312"?>',
        b"<?xml version='1.0' encoding='utf-8'?>",
    ]
)
#: How each piece of a keepalive may vary: a plain keepalive with one or two of them changed is
#: the boundary the fast path must get right.
_VARIANTS: dict[str, st.SearchStrategy[bytes]] = {
    "lead": _BLANK,
    "prolog": _PROLOG,
    "root": st.sampled_from([b"notify", b"Response", b"Notify ", b'Notify a="1"']),
    "cmd": st.sampled_from([b"keepalive", b"Catalog", b"Keepalive "]) | _TEXT,
    "sn": _TEXT | st.from_regex(rb"\A[0-9]{19,25}\Z", fullmatch=True),
    "dev": _TEXT,
    "status": _TEXT,
    "gap": _BLANK,
    "close": _TAG,
    "extra": _TAG,
    "order": st.just(b"swap"),
    "trail": _BLANK,
}


@st.composite
def keepalive_bodies(draw: st.DrawFn) -> bytes:
    piece = {
        "lead": draw(_OK_BLANK),
        "prolog": draw(_OK_PROLOG),
        "root": b"Notify",
        "cmd": b"Keepalive",
        "sn": draw(st.from_regex(rb"\A[0-9]{1,18}\Z", fullmatch=True)),
        "dev": draw(st.from_regex(rb"\A[0-9A-Za-z]{1,32}\Z", fullmatch=True)),
        "status": draw(st.sampled_from([b"OK", b"ERROR", b"ok", b"Online"])),
        "gap": draw(_OK_BLANK),
        "close": b"",
        "extra": b"",
        "order": b"",
        "trail": draw(_OK_BLANK),
    }
    for name in draw(st.lists(st.sampled_from(sorted(_VARIANTS)), max_size=2, unique=True)):
        piece[name] = draw(_VARIANTS[name])
    fields = [
        (b"CmdType", piece["cmd"]),
        (b"SN", piece["sn"]),
        (b"DeviceID", piece["dev"]),
        (b"Status", piece["status"]),
    ]
    if piece["order"]:
        fields.reverse()
    if piece["extra"]:
        fields.insert(2, (piece["extra"], b"1"))
    gap = piece["gap"]
    body = [piece["lead"], piece["prolog"], gap, b"<" + piece["root"] + b">"]
    for i, (name, text) in enumerate(fields):
        close = piece["close"] if piece["close"] and i == 1 else name
        body += [gap, b"<" + name + b">" + text + b"</" + close + b">"]
    body += [gap, b"</" + piece["root"].split(b" ")[0] + b">", piece["trail"]]
    return b"".join(body)


@settings(max_examples=500)
@given(keepalive_bodies())
def test_the_fast_path_declines_or_agrees_with_the_general_parser(body: bytes) -> None:
    agrees(body)


@given(st.binary(max_size=300))
def test_the_fast_path_declines_or_agrees_on_any_bytes(body: bytes) -> None:
    agrees(body)


@given(st.data())
def test_one_byte_changed_in_a_plain_keepalive_declines_or_agrees(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(PLAIN) - 1))
    byte = data.draw(st.integers(0, 255))
    agrees(PLAIN[:i] + bytes([byte]) + PLAIN[i + 1 :])


# --- the cuts is_keepalive keeps (a body taken without the pattern) ---------------------------


def plain_cut() -> tuple[bytes, bytes, bytes]:
    """The cut is_keepalive keeps of PLAIN (it is kept, the most recent first, once the pattern took it)."""
    assert is_keepalive(PLAIN)
    head = PLAIN[: PLAIN.index(b"<SN>") + 4]
    middle = PLAIN[PLAIN.index(b"</SN>") : PLAIN.index(b"<DeviceID>") + 10]
    tail = PLAIN[PLAIN.index(b"</DeviceID>") :]
    assert (head, middle, tail) in codec._CUTS
    return head, middle, tail


def test_a_keepalive_like_a_kept_one_but_for_sn_and_device_id_is_read_by_its_cut() -> None:
    head, middle, tail = plain_cut()
    body = head + b"7" + middle + b"34020000001320000099" + tail
    assert codec._cut_fits(body, (head, middle, tail))
    assert is_keepalive(body) and keepalive_fast(body) == Keepalive(7, "34020000001320000099", "OK") == general(body)


@pytest.mark.parametrize(
    ("sn", "dev"),
    [(b"", DEV.encode()), (b"1" * 19, DEV.encode()), (b"4", b""), (b"4", b"1" * 33), (b"4 ", DEV.encode()),
     (b"\xd9\xa1", DEV.encode()), (b"4", b"ab-c"), (b"4", b"\xc3\xa9"), (b"4</SN>", DEV.encode())],
)  # fmt: skip
def test_a_cut_takes_no_sn_or_device_id_the_pattern_would_not(sn: bytes, dev: bytes) -> None:
    head, middle, tail = plain_cut()
    body = head + sn + middle + dev + tail
    assert not codec._cut_fits(body, (head, middle, tail))
    assert is_keepalive(body) is (keepalive_fast(body) is not None) is False


@settings(max_examples=500)
@given(keepalive_bodies(), _TEXT | st.from_regex(rb"\A[0-9]{1,20}\Z", fullmatch=True), _TEXT)
def test_a_cut_takes_only_what_the_pattern_takes(kept: bytes, sn: bytes, dev: bytes) -> None:
    """Whatever body a cut was kept of, and whatever is put in for its SN and DeviceID: the cut takes
    the result only if the pattern does, and is_keepalive (cut or pattern) agrees with keepalive_fast."""
    m = codec._KEEPALIVE_RE.fullmatch(kept)
    if m is None:
        return
    cut = (kept[: m.start(1)], kept[m.end(1) : m.start(2)], kept[m.end(2) :])
    body = cut[0] + sn + cut[1] + dev + cut[2]
    if codec._cut_fits(body, cut):
        assert codec._KEEPALIVE_RE.fullmatch(body) is not None
    is_keepalive(kept)  # kept as a cut, the most recent first
    agrees(body)


def test_the_cuts_kept_are_bounded() -> None:
    for n in range(codec._CUTS_KEPT * 3):
        body = PLAIN.replace(b"<Notify>\r\n", b"<Notify>\r\n" + b" " * n)
        assert is_keepalive(body)
        assert len(codec._CUTS) <= codec._CUTS_KEPT
    assert is_keepalive(PLAIN)  # read again by the pattern once its cut was let go
