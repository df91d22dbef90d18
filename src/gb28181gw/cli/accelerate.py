"""``gb28181gw accelerate``: compile the hot path with mypyc, beside the package, never into it.

A command, not a build-backend option, so that ``pip install gb28181gw`` stays a pure-Python
install that needs no compiler, and so that the compiled modules are tied to the sources they were
built from (:mod:`gb28181gw.compiled` loads them only while every source hash matches): a build
hook would put ``.so`` files next to the ``.py`` files, which an editable install would then import
stale after the next edit. Needs mypy (it ships mypyc: ``pip install 'gb28181gw[accelerate]'``), a C
compiler and the Python headers; takes about a minute on one core.
"""

from __future__ import annotations

import ast
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import click

from gb28181gw import compiled
from gb28181gw.cli.common import fail, main, warn

#: Run in a child process with the build directory as its working directory: mypycify writes its
#: C files under ./build, and setuptools' setup() may exit the process on a compiler error.
_BUILD = r"""
import json, sys
from mypyc.build import mypycify
from setuptools import setup
a = json.loads(sys.argv[1])
setup(
    name="gb28181gw-compiled",
    ext_modules=mypycify(["--config-file", a["config"], *a["paths"]], opt_level=a["opt"], group_name=a["group"]),
    script_args=["build_ext", "--build-lib", a["out"], "--build-temp", a["temp"]],
)
"""
#: mypy as mypyc needs it: third-party packages without stubs (lxml without lxml-stubs) are Any.
_MYPY_CONFIG = "[mypy]\nignore_missing_imports = True\n"


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def sources_read(root: Path, modules: tuple[str, ...]) -> list[Path]:
    """The package files a build of ``modules`` depends on: the modules, every package module they
    import (at run time or for types), transitively, and the ``__init__.py`` of each package on the way."""
    todo = list(modules)
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            todo.append(".".join(parts[:i]))
        path = _module_file(root, name)
        if path is None:
            continue  # `from gb28181gw.sip import quick` names a module; `... import Peer` does not
        files.add(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == "gb28181gw"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base.split(".")[0] == "gb28181gw":
                    todo.append(base)
                    todo += [f"{base}.{a.name}" for a in node.names]
    return sorted(files)


def _prerequisites() -> None:
    missing = [m for m in ("mypyc", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        fail(
            f"cannot compile: {' and '.join(missing)} not installed",
            "pip install 'gb28181gw[accelerate]' (mypy ships mypyc)",
        )
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]  # setuptools honours $CC too
    if shutil.which(cc) is None:
        fail(
            f"cannot compile: no C compiler ({cc!r} is not on PATH)", "install gcc (Debian/Ubuntu: apt-get install gcc)"
        )
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not header.is_file():
        fail(f"cannot compile: no Python headers ({header} is missing)", "Debian/Ubuntu: apt-get install python3-dev")


def build(target: Path, *, opt_level: str = "3", verbose: bool = False) -> dict[str, Any]:
    """Compile :data:`compiled.MODULES` into ``target`` and return its manifest.

    The package's sources are copied first and the copy is what is hashed and compiled, so a file
    edited during the build cannot be recorded as built when it was not. ``target`` is replaced
    only once the new build is whole.
    """
    with tempfile.TemporaryDirectory(prefix="gb28181gw-accelerate-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src"
        shutil.copytree(compiled.PACKAGE_DIR, src / "gb28181gw", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        (tmp / "mypy.ini").write_text(_MYPY_CONFIG)
        paths = [str(_module_file(src, m)) for m in compiled.MODULES]
        args = {
            "config": str(tmp / "mypy.ini"),
            "paths": paths,
            "opt": opt_level,
            "group": compiled.GROUP,
            "out": str(tmp / "out"),
            "temp": str(tmp / "temp"),
        }
        done = subprocess.run(
            [sys.executable, "-c", _BUILD, json.dumps(args)],
            cwd=tmp,
            stdout=None if verbose else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout or "").splitlines()[-40:])
            raise click.ClickException(f"mypyc failed (exit {done.returncode}):\n{tail}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        files = {m: f"{m.replace('.', '/')}{suffix}" for m in compiled.MODULES}
        files[f"{compiled.GROUP}__mypyc"] = f"{compiled.GROUP}__mypyc{suffix}"
        missing = [f for f in files.values() if not (tmp / "out" / f).is_file()]
        if missing:
            raise click.ClickException(f"mypyc did not produce {', '.join(missing)}")
        manifest = {
            "format": compiled.FORMAT,
            "python": compiled.python_tag(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "package_dir": str(compiled.PACKAGE_DIR),
            "modules": list(compiled.MODULES),
            "files": files,
            "sizes": {rel: (tmp / "out" / rel).stat().st_size for rel in files.values()},
            "sources": {
                p.relative_to(src / "gb28181gw").as_posix(): compiled.source_hash(p)
                for p in sources_read(src, compiled.MODULES)
            },
        }
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=_parent(target)))
        try:
            for rel in files.values():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tmp / "out" / rel, staging / rel)
            (staging / compiled.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        except BaseException:  # a full disk, ^C: no half-made copy left beside the build
            shutil.rmtree(staging, ignore_errors=True)
            raise
    remove(target)
    # mkdtemp's 0700 would hide the build from a gateway run as another user; and whatever the umask,
    # nobody else may write it (gb28181gw.compiled refuses a build others could have written)
    for path in (staging, *staging.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    staging.rename(target)
    return manifest


def _lock(target: Path) -> IO[bytes]:
    """One build into ``target`` at a time: two would each delete the other's result before renaming
    their own into place, and the later rename fail on the directory the first just put there."""
    handle = open(_parent(target) / f".{target.name}.lock", "wb")  # noqa: SIM115 - held by the caller
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        fail(f"another gb28181gw accelerate is building into {target}", "wait for it to finish")
    return handle


def _parent(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent


def remove(target: Path) -> None:
    """Delete a build directory, refusing anything that does not look like one."""
    if not target.exists():
        return
    if not (target / compiled.MANIFEST).is_file() and any(target.iterdir()):
        raise click.ClickException(f"{target} is not a gb28181gw build (no {compiled.MANIFEST}); not removing it")
    shutil.rmtree(target)


def _loads(target: Path) -> tuple[list[str], str | None]:
    """Import every compiled module in a fresh interpreter with ``target`` as the build: what it used."""
    probe = (
        "import importlib, json\nfrom gb28181gw import compiled\n"
        "for m in compiled.MODULES: importlib.import_module(m)\n"
        "print(json.dumps([compiled.in_use(), compiled.state().get('why')]))"
    )
    env = {**os.environ, compiled.ENV_DIR: str(target)}
    env.pop(compiled.ENV_OFF, None)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return [], done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
    used, why = json.loads(done.stdout.strip().splitlines()[-1])
    return used, why


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Build directory (default: ${compiled.ENV_DIR}, else one in the user's cache for this install).",
)
@click.option("--check", is_flag=True, help="Only say whether a build exists and would be used; exit 1 if not.")
@click.option("--remove", "remove_it", is_flag=True, help="Delete the build: the gateway runs its .py sources.")
@click.option("-v", "--verbose", is_flag=True, help="Show mypyc's and the compiler's output.")
# the C compiler's -O level: tests/test_compiled.py builds with 0, in half the time
@click.option("--opt-level", type=click.Choice(["0", "1", "2", "3"]), default="3", hidden=True)
def accelerate(directory: Path | None, check: bool, remove_it: bool, verbose: bool, opt_level: str) -> None:
    """Compile the SIP hot path with mypyc (about 2x less CPU per REGISTER and keepalive).

    The gateway loads the build only while its sources are unchanged: after an upgrade or an
    edit it runs the .py files again (and says so at start-up) until this is run again.
    """
    target = directory or compiled.build_dir()
    if remove_it:
        remove(target)
        click.echo(f"removed {target}")
        return
    if check:
        manifest = compiled.read_manifest(target)
        if manifest is None:
            fail(f"no build in {target}", "gb28181gw accelerate")
        reason = compiled.stale_reason(manifest, target)
        if compiled.disabled():
            warn(f"{compiled.ENV_OFF} turns compiled modules off in this environment")
        if reason is not None:
            fail(f"the build in {target} is not used: {reason}", "gb28181gw accelerate")
        click.echo(
            f"{target}: {len(manifest['files']) - 1} modules built {manifest.get('built_at', '?')}, matching their sources"
        )
        return
    # before a minute of compiling, not after: what would stop the build from replacing the old one
    if target.exists() and not (target / compiled.MANIFEST).is_file() and any(target.iterdir()):
        fail(f"{target} is not a gb28181gw build (no {compiled.MANIFEST}); not building into it", "--dir <empty dir>")
    lock = _lock(target)  # held until the process exits
    _prerequisites()
    began = time.monotonic()
    click.echo(f"compiling {len(compiled.MODULES)} modules with mypyc into {target} (about a minute) ...")
    manifest = build(target, opt_level=opt_level, verbose=verbose)
    lock.close()
    used, why = _loads(target)
    if len(used) != len(compiled.MODULES):
        fail(
            f"built, but not loaded ({why}); the gateway runs its .py sources",
            f"gb28181gw accelerate --remove --dir {target}",
        )
    click.echo(
        f"compiled {len(used)} modules in {time.monotonic() - began:.0f} s; `gb28181gw serve` uses them from its next "
        f"start while their {len(manifest['sources'])} sources are unchanged"
    )
