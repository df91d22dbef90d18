"""The hot path compiled with mypyc, used only when it was built from exactly the sources on disk.

``gb28181gw accelerate`` (:mod:`gb28181gw.cli.accelerate`) compiles :data:`MODULES` with mypyc
into a directory outside the package (:func:`build_dir`) and writes a manifest there: the Python
it was built for, the extension file of each module, and the SHA-256 of every source the build
read (the compiled modules and every package module they import, transitively).

:func:`install`, called by ``gb28181gw/__init__.py``, puts a finder first on ``sys.meta_path``
when such a manifest exists. The first import of a compiled module checks every hash, once: if
all match, every compiled module is loaded from the build; if any source differs (edited since
the build) or the Python is another, none is, the ``.py`` files are imported as always, and one
warning says why. All or nothing, because inside one mypyc build the modules call each other's
compiled code directly: a fresh ``sip/quick.py`` beside a stale compiled ``gb/quick`` would still
run the stale reader. Nothing is ever put next to the ``.py`` files: with an editable install a
``.so`` there would be imported, stale or not, before the source.

``GB28181GW_COMPILED=off`` turns the finder off (the pure package, e.g. to compare the two in
one benchmark run); ``GB28181GW_COMPILED_DIR`` names the build directory. The test suite runs
pure unless told otherwise (``tests/conftest.py``); ``tests/test_compiled.py`` builds the
modules and runs the quick path's property tests against them.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: The modules compiled: every step of a quick REGISTER and keepalive (``bench_quick.py --profile``).
#: ``deadlines`` and ``net.timer`` too: each REGISTER queues a liveness deadline and each keepalive
#: re-arms the one timer, and a sampling profile of the build (perf) showed their interpreted
#: frames under the compiled callers. ``gb.bans`` too: the registrar asks it four times per
#: REGISTER (held bans twice, counted failures, the refusal to forget), each an interpreted call.
#: ``relay.forwarder``, ``relay.mmsg`` and ``media.stats``: the relay worker's per-packet loop, its
#: batches and the statistics it keeps (``bench_relay.py --compiled both``); the ctypes layouts of
#: ``relay.msghdr`` stay interpreted (mypyc cannot compile a ``ctypes.Structure``). ``media.ps`` too:
#: the forwarder looks into the first pack of every frame with its ``PsInspector``, the one
#: interpreted frame a sampling profile of the compiled relay still showed under ``_frame``.
MODULES = (
    "gb28181gw.ids",
    "gb28181gw.deadlines",
    "gb28181gw.sip.quick",
    "gb28181gw.sip.auth",
    "gb28181gw.sip.completed",
    "gb28181gw.sip.endpoint",
    "gb28181gw.sip.peer",
    "gb28181gw.manscdp.codec",
    "gb28181gw.gb.model",
    "gb28181gw.gb.bans",
    "gb28181gw.gb.devices",
    "gb28181gw.gb.keepalive",
    "gb28181gw.gb.quick",
    "gb28181gw.gb.registrar",
    "gb28181gw.sip.flood",
    "gb28181gw.net.router",
    "gb28181gw.net.timer",
    "gb28181gw.net.sip_udp",
    "gb28181gw.net.stack",
    "gb28181gw.services.registrar",
    "gb28181gw.media.stats",
    "gb28181gw.media.ps",
    "gb28181gw.relay.forwarder",
    "gb28181gw.relay.mmsg",
)
#: The mypyc group: its shared library (``gb28181gw_native__mypyc``) holds the code of every module.
GROUP = "gb28181gw_native"
MANIFEST = "manifest.json"
FORMAT = 2  # 2: the size of every build file, so a cut-short one is refused before it is mapped
ENV_OFF = "GB28181GW_COMPILED"
ENV_DIR = "GB28181GW_COMPILED_DIR"
PACKAGE_DIR = Path(__file__).resolve().parent


def build_dir(env: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """Where ``gb28181gw accelerate`` builds and the finder looks: ``$GB28181GW_COMPILED_DIR``, else
    the user's cache, one directory per package directory and Python (two checkouts never share a
    build, so neither can take the other's for its own)."""
    env = os.environ if env is None else env
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR])
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = hashlib.sha256(str(PACKAGE_DIR).encode()).hexdigest()[:12]
    return cache / "gb28181gw" / "compiled" / f"{sys.implementation.cache_tag}-{where}"


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def python_tag() -> str:
    """What a build must match: the interpreter's version and its extension modules' suffix."""
    return f"{sys.version.split()[0]} {importlib.machinery.EXTENSION_SUFFIXES[0]}"


def disabled(env: os._Environ[str] | dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(ENV_OFF, "").strip().lower() in ("off", "0", "no", "false")


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The build's manifest, ``None`` when there is none; one that cannot be read comes back as a
    manifest :func:`stale_reason` refuses (saying why), never as an exception: ``gb28181gw/__init__``
    reads it, so a crash here would stop every command, ``gb28181gw accelerate --remove`` included."""
    try:
        text = (directory / MANIFEST).read_text()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"unreadable": f"cannot read {directory / MANIFEST}: {e}"}
    try:
        data = json.loads(text)
    except ValueError as e:
        return {"unreadable": f"{directory / MANIFEST} is not JSON ({e})"}
    return data if isinstance(data, dict) else {"unreadable": f"{directory / MANIFEST} is not a JSON object"}


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def stale_reason(manifest: dict[str, Any], directory: Path, package_dir: Path = PACKAGE_DIR) -> str | None:
    """Why this build must not be used here, or ``None`` when every check passes."""
    if "unreadable" in manifest:
        return str(manifest["unreadable"])
    if manifest.get("format") != FORMAT:
        return f"the build's manifest is of another format ({manifest.get('format')!r})"
    if not (_str_map(manifest.get("files")) and _str_map(manifest.get("sources"))):
        return f"{directory / MANIFEST} is malformed (its files and sources are not maps of names to strings)"
    if manifest.get("python") != python_tag():
        return f"built for Python {manifest.get('python')}, this is {python_tag()}"
    changed: list[str] = []
    for rel, digest in sorted(manifest.get("sources", {}).items()):
        try:
            if source_hash(package_dir / rel) != digest:
                changed.append(rel)
        except OSError:
            changed.append(f"{rel} (gone)")
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"edited since the build: {', '.join(changed[:3])}{more}"
    missing = [f for f in manifest["files"].values() if not (directory / f).is_file()]
    if missing:
        return f"build files missing: {', '.join(missing)}"
    if (unsafe := _unsafe(directory, manifest["files"].values())) is not None:
        return unsafe
    not_native = [
        f for f in manifest["files"].values() if not f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    ]
    if not_native:
        return f"{directory / MANIFEST} names files that are not extension modules: {', '.join(not_native)}"
    # A .so cut short (a copy of the build that failed half-way, a full disk) kills the process with
    # SIGBUS when the loader maps it: no exception to fall back on, so its size is checked first. Sizes,
    # not hashes: hashing the 5 MB library would cost every command ~7 ms; the directory is trusted.
    sizes = manifest.get("sizes")
    if not isinstance(sizes, dict):
        return f"{directory / MANIFEST} is malformed (no sizes of its files)"
    cut = [f for f in manifest["files"].values() if (directory / f).stat().st_size != sizes.get(f)]
    if cut:
        return f"build files cut short or replaced: {', '.join(cut)}"
    return None


def _unsafe(directory: Path, files: Iterable[str]) -> str | None:
    """Why someone other than this user (or root) could have put code into the build, if they could.

    The hashes prove the sources unchanged, not the build: whoever can write the directory can write
    a manifest whose hashes match and a library of their own, run by every gateway started from it
    (e.g. ``GB28181GW_COMPILED_DIR`` in /tmp, or a directory made group-writable). As ssh does for
    its keys: refuse, saying which path and how to fix it."""
    me = os.geteuid()
    paths = {directory, directory / MANIFEST}
    for rel in files:
        path = directory / rel
        paths.add(path)
        paths.update(p for p in path.parents if p.is_relative_to(directory))
    for path in sorted(paths):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # nothing there to load code from
        if st.st_uid not in (me, 0):
            return f"{path} is owned by uid {st.st_uid}, not this user ({me}) or root: not loading code from it"
        if st.st_mode & 0o022:
            return f"{path} is writable by other users ({st.st_mode & 0o777:o}): not loading code from it (chmod go-w)"
    return None


class CompiledFinder:
    """A ``sys.meta_path`` finder serving the build's extension modules, all or none (see module doc)."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.manifest = manifest
        files: Any = manifest.get("files")
        # a malformed map serves nothing (stale_reason says why); it must not fail `import gb28181gw`
        self.files: dict[str, str] = dict(files) if _str_map(files) else {}
        self.checked = False
        #: ``None`` once the build was found to match its sources; else why it is not used.
        self.reason: str | None = "not checked yet"

    def usable(self) -> bool:
        if not self.checked:
            self.checked = True
            self.reason = stale_reason(self.manifest, self.directory)
            if self.reason is None and (shared := f"{GROUP}__mypyc") in self.files:
                # the library holding every module's code, loaded first: if it cannot be (built on
                # another system, damaged), nothing compiled is loaded yet and all can still fall back
                try:
                    importlib.import_module(shared)
                except ImportError as e:
                    sys.modules.pop(shared, None)
                    self.reason = f"the build cannot be loaded: {e}"
            if self.reason is not None:
                log.warning(
                    "compiled modules not used (%s): running the .py sources; rebuild with `gb28181gw accelerate`",
                    self.reason,
                )
        return self.reason is None

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        rel = self.files.get(name)
        if rel is None or not self.usable():
            return None
        where = str(self.directory / rel)
        # an extension loader whatever the name says: a manifest naming a .py must not run it
        return importlib.util.spec_from_file_location(
            name, where, loader=importlib.machinery.ExtensionFileLoader(name, where)
        )

    def invalidate_caches(self) -> None:
        pass


_finder: CompiledFinder | None = None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` if a build exists for this package; costs one file read."""
    global _finder
    if _finder is not None or disabled():
        return
    try:
        directory = build_dir()
    except (RuntimeError, KeyError):  # no home directory to find a cache in (a bare container user)
        return
    manifest = read_manifest(directory)
    if manifest is None:
        return
    _finder = CompiledFinder(directory, manifest)
    sys.meta_path.insert(0, _finder)


def in_use() -> list[str]:
    """The compiled modules imported in this process (short names, e.g. ``sip.quick``)."""
    if _finder is None or _finder.reason is not None:
        return []
    loaded = []
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader):
            loaded.append(name.removeprefix("gb28181gw."))
    return loaded


def state() -> dict[str, Any]:
    """What ``gb28181gw status``, the start-up line and ``gb28181gw_build_info`` say about compiled code."""
    if disabled():
        return {"compiled": "off", "modules": [], "why": f"{ENV_OFF}=off"}
    if _finder is None:
        return {"compiled": "not built", "modules": [], "why": f"no build in {build_dir()} (`gb28181gw accelerate`)"}
    modules = in_use()
    if modules:
        return {"compiled": "in use", "modules": modules, "dir": str(_finder.directory)}
    why = _finder.reason if _finder.checked else stale_reason(_finder.manifest, _finder.directory)
    return {"compiled": "not used", "modules": [], "why": why or "no compiled module imported"}


def label() -> str:
    """The ``compiled`` label of ``gb28181gw_build_info``: the modules in use, or ``none``."""
    return ",".join(in_use()) or "none"
