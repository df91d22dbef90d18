"""The hot path compiled by ``gb28181gw accelerate`` (gb28181gw/compiled.py): same answers, never stale.

The loader's checks are tested without a compiler. With one (gcc, the Python headers, mypyc), one
build per run goes into a temporary directory (``--opt-level 0``: half the build time; the same C
from mypyc) and, each in a fresh interpreter: the quick path's property tests and the tests of the
other compiled modules pass against it; an edited source, compiled or only imported by a compiled
module, makes every module load from its ``.py`` with one warning naming the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from gb28181gw import compiled
from gb28181gw.cli.accelerate import sources_read
from tests.helpers import request
from tests.process import free_port, http_get, serve, wait_ready

ROOT = Path(__file__).resolve().parent.parent
#: The test files of the compiled modules that do not replace a method on an instance (a compiled
#: class refuses that: tests/shell/test_registrar_quick.py counts the general path that way).
COMPILED_TESTS = [
    "tests/core/test_quick.py",
    "tests/core/sip/test_auth.py",
    "tests/core/sip/test_completed.py",
    "tests/core/sip/test_endpoint.py",
    "tests/core/gb/test_devices.py",
    "tests/core/gb/test_registrar.py",
    "tests/core/gb/test_bans.py",
    "tests/core/gb/test_keepalive.py",
    "tests/core/test_keepalive_fast.py",
    "tests/core/test_ids.py",
    "tests/core/test_deadlines.py",
    "tests/core/test_manscdp.py",
    # the shell's share (net.stack, net.router, sip.peer, services.registrar): no core test imports
    # them, and a compiled-only fault there would otherwise meet nothing but one OPTIONS
    "tests/shell/test_stack.py",
    "tests/shell/test_router.py",
    "tests/shell/test_registrar.py",
    "tests/shell/test_stalls.py",  # net.timer's LagProbe (its EarliestTimer runs in test_registrar's liveness)
    "tests/shell/test_sip_udp.py",  # net.sip_udp: bursts, drops, per-datagram destination, send errors
    "tests/core/test_flood.py",
    "tests/shell/test_flood.py",
    # relay.forwarder, media.stats and media.ps: the relay's hot path, both ways (per packet and batched),
    # the shared port, joining consumers, and the worker process (its settings pickled across)
    "tests/core/media/test_ports_stats.py",
    "tests/core/media/test_ps.py",
    "tests/shell/test_relay.py",
    "tests/shell/test_relay_batch.py",
    "tests/shell/test_relay_join.py",
    "tests/shell/test_relay_source.py",
    "tests/shell/test_relay_shared.py",
    "tests/shell/test_relay_review2.py",
    "tests/shell/test_relay_workers.py",
    "tests/shell/test_relay_review_s31.py",  # IPv6 accept (a 4-tuple where tuple[str, int] is typed), dual stack
]


def _cannot_compile() -> str | None:
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed (pip install 'gb28181gw[accelerate]')"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}): the compiled modules are not tested here"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Python.h): the compiled modules are not tested here"
    return None


needs_compiler = pytest.mark.skipif(_cannot_compile() is not None, reason=_cannot_compile() or "")


@pytest.fixture(autouse=True)
def _ci_compiles() -> None:
    # .ci/run installs what a build needs (gcc and Python.h come with Debian's Python set-up, mypyc
    # with the test extra): a CI run that skipped these would pass without testing the compiled path
    if os.environ.get("CI") and (why := _cannot_compile()) is not None:
        pytest.fail(f"{why}: CI must test the compiled modules")


def _python(code: str, *, package_root: Path, build: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_root), compiled.ENV_DIR: str(build), compiled.ENV_OFF: "on"}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


PROBE = (
    "import importlib, json\nfrom gb28181gw import compiled\n"
    "mods = [importlib.import_module(m) for m in compiled.MODULES]\n"
    "print(json.dumps({'state': compiled.state(), 'files': [m.__file__ for m in mods], 'label': compiled.label()}))"
)


def _probe(package_root: Path, build: Path) -> tuple[dict[str, object], str]:
    done = _python(PROBE, package_root=package_root, build=build)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


# -- the loader, no compiler needed -------------------------------------------------------------


def test_the_sources_of_a_build_are_the_compiled_modules_and_all_they_import() -> None:
    files = {
        p.relative_to(compiled.PACKAGE_DIR).as_posix()
        for p in sources_read(compiled.PACKAGE_DIR.parent, compiled.MODULES)
    }
    for name in compiled.MODULES:
        assert name.removeprefix("gb28181gw.").replace(".", "/") + ".py" in files
    # imported, not compiled: a build inlines what it read of them, so an edit must void it too
    assert {"__init__.py", "compiled.py", "errors.py", "sip/__init__.py", "sip/message.py", "deadlines.py"} <= files
    assert "cli/serve.py" not in files and "app.py" not in files


def _manifest(**over: object) -> dict[str, object]:
    quick = compiled.PACKAGE_DIR / "sip" / "quick.py"
    manifest: dict[str, object] = {
        "format": compiled.FORMAT,
        "python": compiled.python_tag(),
        "modules": list(compiled.MODULES),
        "files": {},
        "sizes": {},
        "sources": {"sip/quick.py": compiled.source_hash(quick)},
    }
    manifest.update(over)
    return manifest


def test_a_build_matching_its_sources_is_usable(tmp_path: Path) -> None:
    assert compiled.stale_reason(_manifest(), tmp_path) is None


def test_an_edited_source_a_gone_file_or_another_python_voids_the_build(tmp_path: Path) -> None:
    edited = compiled.stale_reason(_manifest(sources={"sip/quick.py": "0" * 64}), tmp_path)
    assert edited == "edited since the build: sip/quick.py"
    gone = compiled.stale_reason(_manifest(sources={"sip/nothing.py": "0" * 64}), tmp_path)
    assert gone == "edited since the build: sip/nothing.py (gone)"
    other = compiled.stale_reason(_manifest(python="3.10.0 .cpython-310-x86_64-linux-gnu.so"), tmp_path)
    assert other is not None and other.startswith("built for Python 3.10.0")
    missing = compiled.stale_reason(_manifest(files={"gb28181gw.sip.quick": "gb28181gw/sip/quick.so"}), tmp_path)
    assert missing == "build files missing: gb28181gw/sip/quick.so"
    assert compiled.stale_reason(_manifest(format=0), tmp_path) is not None


def test_without_a_build_nothing_changes(tmp_path: Path) -> None:
    state, stderr = _probe(ROOT / "src", tmp_path / "none")
    assert state["state"] == {"compiled": "not built", "modules": [], "why": state["state"]["why"]}  # type: ignore[index]
    assert all(str(f).endswith(".py") for f in state["files"])  # type: ignore[attr-defined]
    assert state["label"] == "none" and stderr == ""


def test_the_build_directory_is_per_install_and_named_by_the_environment(tmp_path: Path) -> None:
    assert compiled.build_dir({compiled.ENV_DIR: str(tmp_path)}) == tmp_path
    default = compiled.build_dir({"XDG_CACHE_HOME": str(tmp_path)})
    assert default.parent == tmp_path / "gb28181gw" / "compiled"
    assert default.name.startswith(sys.implementation.cache_tag + "-")
    assert compiled.disabled({compiled.ENV_OFF: "off"}) and not compiled.disabled({compiled.ENV_OFF: "on"})


def test_accelerate_without_a_compiler_says_so_and_builds_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CC": str(tmp_path / "no-such-cc")}
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "accelerate", "--dir", str(tmp_path / "build")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "no C compiler" in done.stderr and "no-such-cc" in done.stderr and "install gcc" in done.stderr
    assert not (tmp_path / "build").exists()


def test_accelerate_remove_deletes_only_a_build(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("not a build")
    argv = [sys.executable, "-m", "gb28181gw", "accelerate", "--remove", "--dir"]
    refused = subprocess.run([*argv, str(other)], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "is not a gb28181gw build" in refused.stderr
    assert (other / "keep.txt").is_file()
    build = tmp_path / "build"
    build.mkdir()
    (build / compiled.MANIFEST).write_text("{}")
    removed = subprocess.run([*argv, str(build)], env=env, capture_output=True, text=True)
    assert removed.returncode == 0 and not build.exists()


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        ('{"format": 2, "files": {"gb28181gw.ids": ', "is not JSON"),  # cut short by a copy that failed
        ('["not", "a", "map"]', "is not a JSON object"),
        ('{"format": 2, "python": "%s", "files": ["gb28181gw/ids.so"], "sources": {}}', "is malformed"),
        ('{"format": 2, "python": "%s", "files": {"gb28181gw.ids": "ids.so"}, "sources": ["ids.py"]}', "is malformed"),
    ],
    ids=["cut-short", "not-an-object", "files-a-list", "sources-a-list"],
)
def test_a_broken_manifest_is_refused_saying_why_and_every_command_still_runs(
    tmp_path: Path, manifest: str, why: str
) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / compiled.MANIFEST).write_text(manifest.replace("%s", compiled.python_tag()))
    state, _ = _probe(ROOT / "src", build)
    assert state["state"]["compiled"] == "not used" and why in state["state"]["why"], state  # type: ignore[index]
    assert all(str(f).endswith(".py") for f in state["files"])  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), compiled.ENV_DIR: str(build), compiled.ENV_OFF: "on"}
    argv = [sys.executable, "-m", "gb28181gw", "accelerate"]
    check = subprocess.run([*argv, "--check"], env=env, capture_output=True, text=True)
    assert check.returncode == 1 and why in check.stderr, check.stderr
    removed = subprocess.run([*argv, "--remove"], env=env, capture_output=True, text=True)
    assert removed.returncode == 0 and not build.exists(), removed.stderr


@pytest.mark.parametrize("how", ["world-writable", "a-py-file"])
def test_a_build_someone_else_could_have_written_runs_none_of_its_code(tmp_path: Path, how: str) -> None:
    # what anyone who can write the directory (GB28181GW_COMPILED_DIR=/tmp/..., a shared group) could
    # put there: the real sources' hashes, which prove nothing about the build, and code of their own
    build = tmp_path / "build"
    build.mkdir()
    ran = tmp_path / "ran"
    (build / "ids.py").write_text(f"open({str(ran)!r}, 'w').write('foreign code ran')\n")
    sources = {
        p.relative_to(compiled.PACKAGE_DIR).as_posix(): compiled.source_hash(p)
        for p in sources_read(compiled.PACKAGE_DIR.parent, compiled.MODULES)
    }
    manifest = _manifest(
        files={"gb28181gw.ids": "ids.py"}, sizes={"ids.py": (build / "ids.py").stat().st_size}, sources=sources
    )
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    if how == "world-writable":
        build.chmod(0o777)
    code = "import json\nfrom gb28181gw import compiled, ids\nprint(json.dumps(compiled.state()))"
    done = _python(code, package_root=ROOT / "src", build=build)
    assert not ran.exists(), done.stderr
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    why = "writable by other users (777)" if how == "world-writable" else "not extension modules: ids.py"
    assert state["compiled"] == "not used" and why in state["why"], state


def test_accelerate_refuses_before_compiling_a_dir_it_could_not_replace_or_another_build_holds(
    tmp_path: Path,
) -> None:
    # no compiler (CC): a refusal that comes only after the build would say "no C compiler" instead
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CC": str(tmp_path / "no-such-cc")}
    argv = [sys.executable, "-m", "gb28181gw", "accelerate", "--dir"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("not a build")
    refused = subprocess.run([*argv, str(other)], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "is not a gb28181gw build" in refused.stderr, refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # nothing made beside it
    with open(tmp_path / ".build.lock", "wb") as held:  # what a build running now holds
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = subprocess.run([*argv, str(tmp_path / "build")], env=env, capture_output=True, text=True)
    assert busy.returncode == 1 and "another gb28181gw accelerate is building into" in busy.stderr, busy.stderr


# -- a real build -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("compiled") / "build"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "accelerate", "--dir", str(target), "--opt-level", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield target


@needs_compiler
def test_the_quick_path_tests_pass_against_the_compiled_modules(build: Path) -> None:
    run = (
        PROBE + "\nassert compiled.state()['compiled'] == 'in use', compiled.state()\n"
        "assert all(f.endswith(compiled.importlib.machinery.EXTENSION_SUFFIXES[0]) for f in "
        "[m.__file__ for m in mods]), [m.__file__ for m in mods]\n"
        "import pytest, sys\n"
        f"sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', '-p', 'no:xdist', *{COMPILED_TESTS!r}]))"
    )
    done = _python(run, package_root=ROOT / "src", build=build)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1]


@needs_compiler
def test_the_build_closes_its_sockets_on_uvloop(build: Path) -> None:
    # The gateway runs on uvloop, whose remove_reader returns None where typeshed says bool, and
    # compiled code may check what a call returns: the relay's close raised TypeError (stopping.stop_reading).
    run = PROBE + (
        "\nimport asyncio, socket, uvloop\n"
        "from gb28181gw.metrics import SipCounters\n"
        "from gb28181gw.net.sip_udp import UdpTransport\n"
        "from gb28181gw.relay.forwarder import Forwarder, RelaySettings\n"
        "from gb28181gw.sdp import StreamMode\n"
        "async def main():\n"
        "    udp = UdpTransport.bind(object(), '127.0.0.1', 0, receive_buffer=1 << 16, counters=SipCounters())\n"
        "    forwarder = Forwarder(RelaySettings('127.0.0.1', 65536, 1 << 16, 1.0, 0))\n"
        "    probes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]\n"
        "    ports = [p.bind(('127.0.0.1', 0)) or p.getsockname()[1] for p in probes]\n"
        "    [p.close() for p in probes]\n"
        "    forwarder.open('s1', ports[0], StreamMode.UDP, 1234)\n"
        "    forwarder.open('s2', ports[1], StreamMode.TCP_PASSIVE, 1235)\n"
        "    forwarder.close('s1'); forwarder.close_all(); udp.close()\n"
        "    print('closed')\n"
        "uvloop.run(main())\n"
    )
    done = _python(run, package_root=ROOT / "src", build=build)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    state = json.loads(done.stdout.splitlines()[0])
    assert state["state"]["compiled"] == "in use", state
    assert done.stdout.splitlines()[-1] == "closed"


@needs_compiler
def test_an_unchanged_copy_uses_the_build(build: Path, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "gb28181gw", tmp_path / "gb28181gw", ignore=shutil.ignore_patterns("__pycache__"))
    state, stderr = _probe(tmp_path, build)
    assert state["state"]["compiled"] == "in use", state  # type: ignore[index]
    assert state["state"]["modules"] == [m.removeprefix("gb28181gw.") for m in compiled.MODULES]  # type: ignore[index]
    assert state["label"] == ",".join(m.removeprefix("gb28181gw.") for m in compiled.MODULES)
    assert stderr == ""


@needs_compiler
@pytest.mark.parametrize("edited", ["sip/quick.py", "errors.py"])  # compiled; only imported by compiled ones
def test_an_edited_source_makes_every_module_load_from_its_py(build: Path, tmp_path: Path, edited: str) -> None:
    shutil.copytree(ROOT / "src" / "gb28181gw", tmp_path / "gb28181gw", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "gb28181gw" / edited, "a") as f:
        f.write("\n# edited after the build\n")
    state, stderr = _probe(tmp_path, build)
    assert state["state"] == {  # type: ignore[comparison-overlap]
        "compiled": "not used",
        "modules": [],
        "why": f"edited since the build: {edited}",
    }
    assert all(str(f).endswith(".py") for f in state["files"])  # type: ignore[attr-defined]
    assert state["label"] == "none"
    warnings = [line for line in stderr.splitlines() if "compiled modules not used" in line]
    assert len(warnings) == 1 and edited in warnings[0], stderr


@needs_compiler
def test_accelerate_check_says_whether_the_build_is_used(build: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    ok = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "accelerate", "--check", "--dir", str(build)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "matching their sources" in ok.stdout, ok.stdout + ok.stderr
    none = subprocess.run(
        [sys.executable, "-m", "gb28181gw", "accelerate", "--check", "--dir", str(tmp_path / "none")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert none.returncode == 1 and "no build in" in none.stderr


@needs_compiler
def test_a_gateway_says_which_modules_are_compiled(build: Path) -> None:
    sip_port, admin_port = free_port(), free_port()
    env = {"PYTHONPATH": str(ROOT / "src"), compiled.ENV_DIR: str(build), compiled.ENV_OFF: "on"}
    proc = serve("--listen", "127.0.0.1", "--port", str(sip_port), "--admin-port", str(admin_port), env=env)
    admin = f"http://127.0.0.1:{admin_port}"
    names = [m.removeprefix("gb28181gw.") for m in compiled.MODULES]
    try:
        wait_ready(admin, proc)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the compiled stack answers
            s.settimeout(5)
            s.sendto(request("OPTIONS", "z9hG4bKcompiled"), ("127.0.0.1", sip_port))
            assert s.recv(65535).startswith(b"SIP/2.0 200 OK")
        metrics = http_get(admin + "/metrics")[1].decode()
        assert f'compiled="{",".join(names)}"' in metrics
        status = json.loads(http_get(admin + "/api/v1/status")[1])
        assert status["compiled"] == {"compiled": "in use", "modules": names, "dir": str(build)}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    started = [line for line in out.splitlines() if "gateway started" in line]
    assert len(started) == 1 and "sip.quick" in started[0], out


@needs_compiler
@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("cut", "build files cut short or replaced: gb28181gw_native__mypyc"),  # was SIGBUS in every command
        ("garbage", "the build cannot be loaded"),  # the right size, but no library (e.g. built elsewhere)
    ],
)
def test_a_damaged_build_falls_back_to_the_py_files_saying_why(
    build: Path, tmp_path: Path, damage: str, why: str
) -> None:
    copy = tmp_path / "build"
    shutil.copytree(build, copy)
    (library,) = copy.glob(f"{compiled.GROUP}__mypyc*")
    size = library.stat().st_size
    if damage == "cut":
        with open(library, "r+b") as f:
            f.truncate(size // 2)
    else:
        library.write_bytes(b"\0" * size)
    state, stderr = _probe(ROOT / "src", copy)
    assert state["state"]["compiled"] == "not used" and why in state["state"]["why"], state  # type: ignore[index]
    assert all(str(f).endswith(".py") for f in state["files"])  # type: ignore[attr-defined]
    warnings = [line for line in stderr.splitlines() if "compiled modules not used" in line]
    assert len(warnings) == 1 and why in warnings[0], stderr
