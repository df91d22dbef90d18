"""The README is what an integrator on site follows: every command, config key, path, port and
log line it names must exist, or it sends them after something that is not there.

Each check reads the README (and ``conf/systemd/gb28181gw.service``) as text and holds it against the
code: the click command tree, :func:`gb28181gw.config.describe_options`, the repository's files,
the config defaults, ``.ci/run`` and the log calls in ``src/``. The ``*_rejects_*`` tests feed
each check a README with one thing wrong, so a check that cannot fail is caught too.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from gb28181gw import config
from gb28181gw.app import FD_RESERVE
from gb28181gw.audit import Action
from gb28181gw.cli import main
from tests.helpers import ROOT

README = ROOT / "README.md"
UNIT = ROOT / "conf" / "systemd" / "gb28181gw.service"
SRC = ROOT / "src" / "gb28181gw"

DEFAULTS = {key: default for key, default, _ in config.describe_options()}
SECTIONS = tuple(config.SECTIONS)

# --- reading the README ------------------------------------------------------------------------

FENCE_RE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_RE = re.compile(r"`([^`\n]+)`")
SEPARATORS = frozenset({"&&", "||", "|", ";", "&"})


def code_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks."""
    return FENCE_RE.findall(text)


def code_lines(text: str) -> Iterator[str]:
    """Every line of code: fenced lines (continuations joined) and inline code spans."""
    for block in code_blocks(text):
        yield from block.replace("\\\n", " ").splitlines()
    yield from INLINE_RE.findall(FENCE_RE.sub("", text))


def commands(text: str) -> list[list[str]]:
    """Every ``gb28181gw ...`` invocation: the words after the program name, up to a separator."""
    found = []
    for line in code_lines(text):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        for i, word in enumerate(words):
            if word.rsplit("/", 1)[-1] != "gb28181gw" or i + 1 >= len(words):
                continue
            nxt = words[i + 1]
            # `useradd … gb28181gw`, `journalctl -u gb28181gw -f`: no command word follows
            if not re.fullmatch(r"[a-z][a-z|-]*", nxt) or nxt == "gb28181gw":
                continue
            # `-g gb28181gw`, `docker run --rm gb28181gw config`: a user, group or image
            if i > 0 and words[i - 1].startswith("-") and words[i - 1] != "--":
                continue
            args = []
            for arg in words[i + 1 :]:
                if arg in SEPARATORS:
                    break
                args.append(arg)
            found.append(args)
    return found


def _clean(word: str) -> str:
    """A synopsis word without its brackets and repetition mark: ``[--listen`` → ``--listen``."""
    return word.strip("[]").removesuffix("...").strip("[]")


def _is_placeholder(word: str) -> bool:
    """``DEVICE``, ``34020000001320000001``, ``UTF-8``: a value to fill in, not a literal choice."""
    return not re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", word)


def check_command(args: list[str], cmd: click.Command = main, path: str = "gb28181gw") -> list[str]:
    """What is wrong with ``gb28181gw ARGS``: unknown commands, options, choices, extra arguments."""
    problems: list[str] = []
    words = [_clean(a) for a in args if _clean(a)]
    i = 0
    while isinstance(cmd, click.Group) and i < len(words) and not words[i].startswith("-"):
        names = words[i].split("|")
        unknown = [n for n in names if n not in cmd.commands]
        if unknown:
            return [f"`{path} {words[i]}`: no command {', '.join(unknown)} (has {', '.join(sorted(cmd.commands))})"]
        if len(names) > 1:  # `device show|remove ID`: check each branch with the rest
            for name in names:
                problems += check_command(words[i + 1 :], cmd.commands[name], f"{path} {name}")
            return problems
        cmd, path, i = cmd.commands[words[i]], f"{path} {words[i]}", i + 1
    options: dict[str, click.Option] = {}
    for param in cmd.params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                options[opt] = param
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    positional: list[str] = []
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-") and len(word) > 1:
            for alternative in word.split("|"):
                name, _, value = alternative.partition("=")
                option = options.get(name)
                if option is None and name not in ("-h", "--help"):
                    problems.append(f"`{path}`: no option {name}")
                    continue
                if option is None or option.is_flag or option.count or value:
                    continue
                if i < len(words):  # its value
                    value = words[i]
                    i += 1
                    problems += _check_choice(path, name, option, value)
            continue
        positional.append(word)
    if isinstance(cmd, click.Group) and positional:
        problems.append(f"`{path}`: no command {positional[0]}")
        return problems
    unlimited = any(a.nargs == -1 for a in arguments)
    if not unlimited and len(positional) > sum(a.nargs for a in arguments):
        problems.append(f"`{path}`: too many arguments {positional}")
    for argument, value in zip(arguments, positional, strict=False):
        problems += _check_choice(path, argument.name or "", argument, value)
    return problems


def _check_choice(path: str, name: str, param: click.Parameter, value: str) -> list[str]:
    if not isinstance(param.type, click.Choice) or _is_placeholder(value.lower()):
        return []
    choices = {str(c).lower() for c in param.type.choices}
    bad = [v for v in value.split("|") if v.lower() not in choices]
    return [f"`{path}`: {name} has no choice {', '.join(bad)}"] if bad else []


KEY_RE = re.compile(rf"(?<![\w./-])({'|'.join(SECTIONS)})\.([a-z][a-z0-9_]*)(?![\w(-])")
ENV_RE = re.compile(r"\bGB28181GW_[A-Z0-9_]+\b")


def config_keys(text: str) -> set[str]:
    """Every ``section.key`` named (``admin.py`` and the like are files, ``ledger.edit`` an audit action, not keys)."""
    return {f"{s}.{k}" for s, k in KEY_RE.findall(text) if k != "py"} - {a.value for a in Action}


def env_names(text: str) -> set[str]:
    return set(ENV_RE.findall(text))


def known_env_names() -> set[str]:
    """Settings as environment variables, plus the variables config.py and the CLI read themselves."""
    names = {config.ENV_PREFIX + key.replace(".", "_").upper() for key in DEFAULTS} | set(config.NOT_SETTINGS)
    for path in (SRC / "cli").glob("*.py"):
        names |= set(re.findall(r"[\"'](GB28181GW_[A-Z0-9_]+)[\"']", path.read_text(encoding="utf-8")))
    return names


TOP_LEVEL = ("src/", "tests/", "conf/", "benchmarks/", "sdp_fixtures/", ".ci/")
PATH_RE = re.compile(r"^(?:\.?[\w-]+/)*[\w.-]+(?:\.(?:py|toml|md|xml|c|service|cfg|txt|json)|/)?$")


def cited_paths(text: str) -> set[str]:
    """Repository paths the README cites: Markdown link targets and path-like words in code."""
    paths = {t for t in re.findall(r"\]\(([^)#\s]+)\)", text) if "://" not in t}
    for line in code_lines(text):
        for word in re.split(r"[\s,()]+", line):
            word = word.strip("'\"`;:[]").removesuffix("...").strip("[]")
            if not word or "<" in word or "*" in word or word.startswith(("/", "-", "http")) or "=" in word:
                continue
            if word.startswith(TOP_LEVEL) or word in ("Dockerfile", "pyproject.toml", "README.md"):
                paths.add(word)
            elif re.search(r"\.(py|md|toml|service)$", word) or word.endswith("/"):
                if PATH_RE.match(word) and not word.startswith("gb28181gw"):
                    paths.add(word)
    return paths


def missing_paths(text: str) -> list[str]:
    """Cited paths found neither from the repository root nor under ``src/gb28181gw`` (the layout's base)."""
    return sorted(p for p in cited_paths(text) if not (ROOT / p).exists() and not (SRC / p).exists())


def section(text: str, title_start: str) -> str:
    """The body of the ``##`` section whose title starts with ``title_start``."""
    m = re.search(rf"^## {re.escape(title_start)}.*?\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README has no section '## {title_start}…'"
    return m.group(1)


def firewall_ports(text: str) -> dict[str, str]:
    """``{what: port}`` from the firewall table."""
    rows = {}
    for line in section(text, "Firewall").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"\d+(?:[–-]\d+)?", cells[1]):
            rows[cells[0]] = cells[1].replace("–", "-")
    return rows


LOG_LINE_RE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR) (gb28181gw(?:\.\w+)?) (.+?)(?= [a-z_]+=|$)")


def quoted_log_lines(text: str) -> list[tuple[str, str, str]]:
    """(level, logger, message) of each log line quoted in the logs section."""
    body = section(text, "When video does not arrive")
    return [m.groups() for block in code_blocks(body) for line in block.splitlines() if (m := LOG_LINE_RE.match(line))]


QUOTED_REASON_RE = re.compile(r' reason="([^"]*)"')
STRING_RE = re.compile(r'(?:\bf)?"((?:[^"\\\n]|\\.)*)"')


def quoted_reasons(text: str) -> list[str]:
    """The ``reason="…"`` values of the log lines quoted in the logs section."""
    body = section(text, "When video does not arrive")
    return [r for block in code_blocks(body) for r in QUOTED_REASON_RE.findall(block)]


def reason_problems(reasons: list[str]) -> list[str]:
    """Reasons no string in ``src/`` can produce (an f-string's fields match any text)."""
    patterns = set()
    for path in SRC.rglob("*.py"):
        for literal in STRING_RE.findall(path.read_text(encoding="utf-8")):
            parts = re.split(r"\{[^{}]*\}", literal)
            if sum(len(part.strip()) for part in parts) >= 4:  # "{what} for {n} s", not "{x}: {y}"
                patterns.add(re.compile(".+".join(map(re.escape, parts))))
    return [r for r in reasons if not any(p.fullmatch(r) for p in patterns)]


def log_line_problems(lines: list[tuple[str, str, str]]) -> list[str]:
    """Which quoted lines no ``log.<level>("<message>"`` call in a module of that logger writes."""
    sources = {path: path.read_text(encoding="utf-8") for path in SRC.rglob("*.py")}
    problems = []
    for level, logger, message in lines:
        call = re.compile(rf"\blog\.{level.lower()}\(\s*\"{re.escape(message)}\"")
        homes = [p for p, src in sources.items() if call.search(src)]
        if not homes:
            problems.append(f"no log.{level.lower()}({message!r}) in src/")
        elif not any(f'getLogger("{logger}")' in sources[p] for p in homes):
            problems.append(f"{message!r} is not logged by {logger}")
    return problems


# --- the checks on the real README ---------------------------------------------------------------


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_every_command_exists(readme: str) -> None:
    found = commands(readme)
    assert len(found) > 20  # the parser finds the command list
    problems = [p for args in found for p in check_command(args)]
    assert not problems, "\n".join(problems)


def test_every_config_key_exists(readme: str) -> None:
    keys = config_keys(readme)
    assert {"sip.advertised_address", "media.address", "registrar.password"} <= keys
    unknown = sorted(keys - DEFAULTS.keys())
    assert not unknown, f"unknown config keys: {unknown}"
    unknown_env = env_names(readme) - known_env_names()
    assert not unknown_env, f"unknown environment variables: {sorted(unknown_env)}"


def test_every_cited_path_exists(readme: str) -> None:
    assert {"conf/gateway.toml", "conf/systemd/gb28181gw.service", ".ci/run"} <= cited_paths(readme)
    assert not missing_paths(readme), f"cited but not in the repository: {missing_paths(readme)}"


def test_protocol_references_stay_in_the_repository(readme: str) -> None:
    # the protocol notes outside the repository are not shipped with it
    assert "/work/" not in readme
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert not [t for t in links if "://" in t], "links leave the repository"


def test_firewall_ports_are_the_defaults(readme: str) -> None:
    ports = firewall_ports(readme)
    assert ports == {
        "SIP": str(DEFAULTS["sip.port"]),
        "media (RTP)": f"{DEFAULTS['media.port_min']}-{DEFAULTS['media.port_max']}",
        "admin API": str(DEFAULTS["admin.port"]),
    }
    assert DEFAULTS["admin.listen"] == "127.0.0.1"
    assert "token" in section(readme, "Firewall") and "in clear" in section(readme, "Firewall")


def test_docker_run_publishes_what_the_config_uses(readme: str) -> None:
    run = next(line for line in code_lines(readme) if line.startswith("docker run"))
    sip, low, high = DEFAULTS["sip.port"], DEFAULTS["media.port_min"], DEFAULTS["media.port_max"]
    for proto in ("udp", "tcp"):
        assert f"-p {sip}:{sip}/{proto}" in run
        assert f"-p {low}-{high}:{low}-{high}/{proto}" in run
    assert f"-p 127.0.0.1:{DEFAULTS['admin.port']}:{DEFAULTS['admin.port']}" in run
    assert "-e GB28181GW_SIP_ADVERTISED_ADDRESS=" in run
    assert "--network host" in readme
    expose = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("EXPOSE"))
    assert f"{low}-{high}/udp" in expose and f"{low}-{high}/tcp" in expose


def test_top_commands_are_what_ci_runs(readme: str) -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install, tests = code_blocks(section(readme, "Two commands"))[:2]
    assert tests.strip() == "bash .ci/run"
    assert "README: `bash .ci/run`" in ci
    # the install line does what .ci/run does on a fresh Debian: python3-venv, a venv, pip install
    assert "python3 -m venv .venv" in ci and "python3 -m venv .venv" in install
    assert "apt_install python3-venv" in ci and "apt-get update && sudo apt-get install -y python3-venv" in install
    assert ".venv/bin/pip install -q ." in install and install.strip().endswith(".venv/bin/gb28181gw serve")
    requires = re.search(r'requires-python = ">=([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert requires and f"Python {requires.group(1)} or newer" in readme


def test_quoted_log_lines_are_logged(readme: str) -> None:
    lines = quoted_log_lines(readme)
    assert len(lines) >= 5
    assert not log_line_problems(lines), "\n".join(log_line_problems(lines))
    reasons = quoted_reasons(readme)
    assert len(reasons) >= 4
    assert not reason_problems(reasons), f"reasons the code does not write: {reason_problems(reasons)}"


def test_the_audit_table_names_every_action(readme: str) -> None:
    # `--action` takes these names: one the table leaves out is one an auditor never thinks to ask for
    table = section(readme, "Audit trail")
    assert [a.value for a in Action if f"`{a.value}`" not in table] == []


def test_systemd_unit_runs_what_the_readme_says(readme: str) -> None:
    unit = UNIT.read_text(encoding="utf-8")
    values = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    exec_start = shlex.split(values["ExecStart"])
    assert exec_start[0].endswith("/bin/gb28181gw") and not check_command(exec_start[1:])
    config_path = exec_start[exec_start.index("-c") + 1]
    assert config_path in readme and values["User"] in readme
    assert values["WorkingDirectory"] == f"/var/lib/{values['StateDirectory']}"
    # the default store.path is relative: it lands in the state directory the README names
    assert not Path(DEFAULTS["store.path"]).is_absolute()
    assert f"{values['WorkingDirectory']}/{DEFAULTS['store.path']}" in readme
    # enough descriptors that the gateway never cuts sip.tcp_max_connections (app.tcp_connection_budget)
    media = DEFAULTS["media.port_max"] - DEFAULTS["media.port_min"] + 1
    assert int(values["LimitNOFILE"]) >= DEFAULTS["sip.tcp_max_connections"] + media + FD_RESERVE
    # start-up failures exit 3 (config error, busy port, address not there yet at boot): keep trying
    assert values["Restart"] == "on-failure" and values["StartLimitIntervalSec"] == "0"
    assert "RestartPreventExitStatus" not in values
    assert f"LimitNOFILE={values['LimitNOFILE']}" in readme


# --- each check fails on a README with one thing wrong -------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "gb28181gw devicez",
        "gb28181gw device rename 34020000001320000001",
        "gb28181gw device show|erase 34020000001320000001",
        "gb28181gw devices --recent",
        "gb28181gw channels --status MAYBE",
        "gb28181gw status extra",
        "sudo /opt/gb28181gw/bin/gb28181gw serve --colour",
    ],
)
def test_commands_check_rejects_what_does_not_exist(line: str) -> None:
    text = f"Run:\n\n```sh\n{line}\n```\n"
    assert [p for args in commands(text) for p in check_command(args)]


def test_commands_parser_skips_users_and_containers() -> None:
    text = "```sh\nsudo useradd --system gb28181gw\ndocker run --name gb28181gw -d gb28181gw\njournalctl -u gb28181gw -f\n```"
    assert commands(text) == []


def test_config_key_check_rejects_an_unknown_key() -> None:
    keys = config_keys("Set `sip.advertized_address` and `media.adress`; see `admin.py`.")
    assert keys == {"sip.advertized_address", "media.adress"} and not keys <= DEFAULTS.keys()
    assert "GB28181GW_SIP_ADVERTIZED_ADDRESS" not in known_env_names()


def test_path_check_rejects_a_missing_file() -> None:
    assert missing_paths("See `conf/nothing.toml`, [the notes](PROTOCOL.md) and `gb/nowhere.py`.") == [
        "PROTOCOL.md",
        "conf/nothing.toml",
        "gb/nowhere.py",
    ]


def test_port_check_reads_the_table() -> None:
    table = "## Firewall\n\n| what | port | protocol |\n|---|---|---|\n| media (RTP) | 30000–30500 | UDP |\n"
    assert firewall_ports(table) == {"media (RTP)": "30000-30500"}


def test_reason_check_rejects_a_reason_the_code_does_not_write() -> None:
    assert reason_problems(["no RTP at all for 16 s", "wrong password", "no keepalive for 180 s"]) == []
    assert reason_problems(["video lost after 16 s", "bad password"]) == ["video lost after 16 s", "bad password"]


def test_log_line_check_rejects_a_message_the_code_does_not_write() -> None:
    assert log_line_problems([("INFO", "gb28181gw.streams", "video arrived")])
    assert log_line_problems([("INFO", "gb28181gw.registrar", "stream closed")])  # another logger's line
    assert log_line_problems([("INFO", "gb28181gw.streams", "stream setup failed")])  # a WARNING
    assert not log_line_problems([("WARNING", "gb28181gw.streams", "stream setup failed")])


def test_checks_reject_the_real_readme_with_one_mistake(readme: str) -> None:
    assert "`sip.advertised_address`" in readme and "`conf/systemd/gb28181gw.service`" in readme
    typo = readme.replace("`sip.advertised_address`", "`sip.advertise_address`", 1)
    assert "sip.advertise_address" in config_keys(typo) - config_keys(readme)
    assert "sip.advertise_address" not in DEFAULTS
    moved = readme.replace("`conf/systemd/gb28181gw.service`", "`conf/systemd/gb28181gw.unit`", 1)
    assert missing_paths(moved) == ["conf/systemd/gb28181gw.unit"]
    old_range = readme.replace("| 30000–31999 |", "| 30000–30500 |")
    assert firewall_ports(old_range)["media (RTP)"] == "30000-30500" != firewall_ports(readme)["media (RTP)"]
