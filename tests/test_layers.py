"""The layering of STYLE.md §2, checked on every module's imports (ast, no import needed)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "gb28181gw"

CORE = ("errors", "divisions", "ids", "deadlines", "access", "audit", "sip", "sdp", "media", "manscdp", "gb")
FORBIDDEN_IN_CORE = {
    "asyncio", "socket", "selectors", "threading", "sqlite3", "redis", "aiohttp",
    "prometheus_client", "click", "typer", "rich", "av",
}  # fmt: skip
# what each part of the package may import from the package (STYLE.md §2 import rules); config
# imports only errors and ids, so the shell takes its sections from it and no default is restated
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "divisions": set(),
    "ids": {"errors", "divisions"},
    "deadlines": set(),
    "access": {"errors"},
    "audit": set(),
    "sip": {"errors", "deadlines", "sip"},
    "manscdp": {"errors", "manscdp"},
    "sdp": {"errors"},
    "media": {"errors", "media"},
    "gb": {"errors", "divisions", "ids", "deadlines", "sip", "sdp", "media", "manscdp", "gb"},
    "store": {"errors", "ids", "access", "audit", "gb", "store", "stopping"},
    "net": set(CORE) | {"net", "logs", "metrics", "config", "stopping"},
    "metrics": {"metrics", "compiled"},
    "logs": set(),
    "relay": set(CORE) | {"relay", "logs", "stopping"},
    "services": set(CORE) | {"net", "relay", "store", "metrics", "logs", "services", "config", "stopping"},
    # shell helper (asyncio) below every other shell part: stopping a task in bounded time
    "stopping": set(),
    # the finder of the hot path compiled by `gb28181gw accelerate`, installed by gb28181gw/__init__.py
    "compiled": set(),
    "config": {"errors", "ids", "divisions"},
}


def _modules() -> list[tuple[str, Path]]:
    return [(p.relative_to(PKG).parts[0].removesuffix(".py"), p) for p in PKG.rglob("*.py")]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: within the same part
                names.add("gb28181gw." + path.relative_to(PKG).parts[0].removesuffix(".py"))
            else:
                names.add(node.module)
    return names


def test_core_does_no_io_and_reads_no_clock() -> None:
    for part, path in _modules():
        if part not in CORE:
            continue
        bad = {n for n in _imports(path) if n.split(".")[0] in FORBIDDEN_IN_CORE}
        assert not bad, f"{path.name} imports {bad}"
        text = path.read_text()
        for call in ("time.time(", "time.monotonic(", "datetime.now("):
            assert call not in text, f"{path.name} reads the clock ({call})"


def test_layers() -> None:
    for part, path in _modules():
        if part not in ALLOWED:
            continue  # admin, app, cli may import anything below them
        for name in _imports(path):
            if name.startswith("gb28181gw."):
                target = name.split(".")[1]
                assert target in ALLOWED[part] or target == "__init__" or name == "gb28181gw", (
                    f"{path.relative_to(PKG)} ({part}) imports {name}"
                )


def test_lxml_only_in_the_manscdp_codec() -> None:
    users = [p.relative_to(PKG).as_posix() for _, p in _modules() if any(n.startswith("lxml") for n in _imports(p))]
    assert users == ["manscdp/codec.py"]


def test_nothing_imports_app_or_cli() -> None:
    for _, path in _modules():
        if path.name in ("app.py", "__main__.py") or path.relative_to(PKG).parts[0] == "cli":
            continue
        assert not {"gb28181gw.app", "gb28181gw.cli"} & _imports(path), path
