"""Static checks of ``deploy/`` and ``docs/boards.md``: the systemd unit parses and has what
the service needs (``systemd-analyze verify`` where available), the environment template
names real settings, the scripts pass ``bash -n`` (and shellcheck where installed), the udev
rules are well-formed, and every ``bnnbench ...`` command line the docs quote or the scripts
print parses against the real CLI: the subcommand and every option exist and take the values
given. The scripts run against fake ``ssh``/``scp``/``adb`` commands: no board, no network.
"""

from __future__ import annotations

import configparser
import itertools
import json
import os
import re
import shlex
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bnnbench.cli import app
from bnnbench.settings import AgentSettings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "bnnbench-agent.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "bnnbench-agent.env.example"
INSTALL = DEPLOY / "install-agent.sh"
ADB_SETUP = DEPLOY / "android" / "setup-adb-host.sh"
RULES = DEPLOY / "android" / "51-android.rules"
BOARDS = REPO / "docs" / "boards.md"
SCRIPTS = [INSTALL, ADB_SETUP]

# the click objects behind the typer app (recent typer versions vendor their own click, so
# its classes are reached through the command, not imported)
ROOT_CMD = typer.main.get_command(app)
Context = ROOT_CMD.context_class
SUBCOMMANDS = sorted(ROOT_CMD.list_commands(Context(ROOT_CMD)))  # type: ignore[attr-defined]
_SCRATCH = itertools.count()


# ------------------------------------------------------------------ the systemd unit


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def _seconds(span: str) -> float:
    """A systemd time span such as ``15min``, ``900``, ``1h 30s``."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(num) * units[unit]
    return total


def test_unit_has_what_the_agent_service_needs() -> None:
    cp = _unit()
    assert set(cp.sections()) == {"Unit", "Service", "Install"}
    svc = cp["Service"]
    assert svc["User"] == "bnnbench" and svc["Group"] == "bnnbench"
    assert svc["EnvironmentFile"] == "/etc/bnnbench/agent.env"
    exe, *args = shlex.split(svc["ExecStart"])
    assert exe == "/opt/bnnbench/venv/bin/bnnbench" and args == ["agent"]
    assert svc["Restart"] == "on-failure"
    assert "2" in svc["RestartPreventExitStatus"].split()  # bad token: restarting cannot help
    # SIGTERM to the agent only (it finishes its job), with time to do so
    assert svc["KillSignal"] == "SIGTERM" and svc["KillMode"] == "mixed"
    assert _seconds(svc["TimeoutStopSec"]) >= 300
    # hardening that leaves it working
    assert svc["NoNewPrivileges"] == "yes" and svc["PrivateTmp"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert "/var/lib/bnnbench" in svc["ReadWritePaths"].split()
    assert svc["WorkingDirectory"] == "/var/lib/bnnbench"  # relative paths stay writable
    assert "PrivateDevices" not in svc  # adb needs the USB devices
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    assert "must not run other heavy services" in UNIT.read_text().replace("\n# ", " ")


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # the venv does not exist here: point ExecStart at a real binary, keep everything else
    text = UNIT.read_text().replace("/opt/bnnbench/venv/bin/bnnbench", "/bin/true")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for bad in ("Unknown key", "Unknown section", "Invalid", "Failed to parse", "ignoring"):
        assert bad not in out, out


def test_env_example_names_real_agent_settings() -> None:
    fields = {f"BNNBENCH_AGENT_{name.upper()}" for name in AgentSettings.model_fields}
    keys = []
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.lstrip("#").strip()
        if re.match(r"^[A-Z_]+=", line):
            keys.append(line.split("=", 1)[0])
    assert {
        "BNNBENCH_AGENT_COORDINATOR",
        "BNNBENCH_AGENT_TOKEN",
        "BNNBENCH_AGENT_CACHE_DIR",
        "BNNBENCH_AGENT_DEVICES_FILE",
    } <= set(keys)
    assert set(keys) <= fields, set(keys) - fields
    active = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert active["BNNBENCH_AGENT_CACHE_DIR"].startswith("/var/lib/bnnbench/")  # writable


# ------------------------------------------------------------------ scripts and udev rules


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_syntax(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_script_never_disables_host_key_checks() -> None:
    text = INSTALL.read_text()
    assert "BatchMode=yes" in text
    assert "StrictHostKeyChecking" not in text and "UserKnownHostsFile" not in text


_RULE_TOKEN = re.compile(r'^[A-Z]+(\{[A-Za-z_]+\})?(==|!=|\+=|:=|=)"[^"]*"$')
VENDORS = {"18d1", "04e8", "2717", "12d1", "2a70", "05c6", "0e8d", "22d9", "2d95"}


def test_udev_rules_are_well_formed() -> None:
    seen = []
    for n, raw in enumerate(RULES.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = [t.strip() for t in line.split(",")]
        for t in tokens:
            assert _RULE_TOKEN.match(t), f"line {n}: malformed {t!r}"
        assert tokens[0] == 'SUBSYSTEM=="usb"', f"line {n}"
        m = re.fullmatch(r'ATTR\{idVendor\}=="([0-9a-f]{4})"', tokens[1])
        assert m, f"line {n}: vendor id {tokens[1]!r}"
        assert tokens[2:] == ['MODE="0660"', 'GROUP="plugdev"', 'TAG+="uaccess"'], f"line {n}"
        seen.append(m[1])
    assert len(seen) == len(set(seen)), "a vendor listed twice"
    assert set(seen) >= VENDORS


# ------------------------------------------------------------------ bnnbench command lines


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def _bnnbench_commands(line: str) -> list[list[str]]:
    """The argument lists of the ``bnnbench`` invocations in one shell line (after sudo,
    env assignments, pipes and ``&&``)."""
    out, cmd = [], []
    for tok in [*_tokens(line), ";"]:
        if tok and set(tok) <= set("&|;<>()"):
            if cmd:
                out.append(cmd)
            cmd = []
        else:
            cmd.append(tok)
    found = []
    for words in out:
        while words and (re.match(r"^[A-Za-z_]+=", words[0]) or words[0] in ("sudo", "env")):
            head = words.pop(0)
            if head == "sudo":  # sudo's own options
                while words and words[0].startswith("-"):
                    opt = words.pop(0)
                    if opt in ("-u", "-g") and words:
                        words.pop(0)
        if words and os.path.basename(words[0]) == "bnnbench":
            found.append(words[1:])
    return found


def _fenced_lines(md: str) -> list[str]:
    lines, inside = [], False
    for raw in md.splitlines():
        if raw.startswith("```"):
            inside = not inside
            continue
        if inside:
            lines.append(raw)
    joined, buf = [], ""
    for line in lines:  # backslash continuations
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    return joined


def _script_commands(text: str) -> list[list[str]]:
    """``bnnbench SUBCOMMAND ...`` as a script prints or runs it (comment lines skipped;
    shell variables and printf formats become a placeholder word)."""
    subs = "|".join(SUBCOMMANDS)
    pattern = re.compile(r'(?<![\w/.-])(?:[\w/.$]*/)?bnnbench"?\s+((?:' + subs + r')\b[^"\'\n]*)')
    found = []
    for raw in text.splitlines():
        if raw.strip().startswith("#"):
            continue
        for m in pattern.finditer(raw):
            cmd = re.sub(r"\\n$", "", m[1].strip())
            cmd = re.sub(r"\$\{?\w+\}?|%s", "X", cmd)
            words = _tokens(cmd)
            ops = [i for i, w in enumerate(words) if set(w) <= set("&|;<>()")]
            found.append(words[: ops[0]] if ops else words)  # up to a redirection or `;`
    return found


def _check_cli(args: list[str], where: str, tmp_path: Path) -> None:
    """The command parses: subcommand, options and their values (click's own parser, no
    callback run), and ``--help`` on it exits 0. ``devices add`` is run for real with
    ``--no-probe`` into a scratch devices file (URL and option values are validated)."""
    assert args, f"{where}: a bare `bnnbench`"
    shown = f"`bnnbench {' '.join(args)}`"
    parent = Context(ROOT_CMD, info_name="bnnbench")
    cmd = ROOT_CMD
    rest, path = list(args), []
    while hasattr(cmd, "get_command"):  # a group: walk down to the subcommand
        assert rest, f"{where}: {shown} needs a subcommand"
        sub = cmd.get_command(parent, rest[0])
        assert sub is not None, f"{where}: no subcommand {rest[0]!r} in {shown}"
        path.append(rest.pop(0))
        if hasattr(sub, "get_command"):
            parent = Context(sub, info_name=path[-1], parent=parent)
        cmd = sub
    try:  # click's own parsing and type conversion; the command's body does not run
        cmd.make_context(path[-1], rest, parent=parent)
    except Exception as exc:
        if type(exc).__name__ == "Exit":
            pass
        elif hasattr(exc, "format_message"):  # a click UsageError / BadParameter
            pytest.fail(f"{where}: {shown} does not parse: {exc.format_message()}")
        else:
            raise
    res = CliRunner().invoke(app, [*args, "--help"])
    assert res.exit_code == 0, f"{where}: `bnnbench {' '.join(args)} --help`: {res.output}"
    if path == ["devices", "add"]:
        devices = tmp_path / f"devices-{next(_SCRATCH)}.toml"
        res = CliRunner().invoke(app, [*args, "--no-probe", "--devices", str(devices)])
        assert res.exit_code == 0, f"{where}: `bnnbench {' '.join(args)}`: {res.output}"
        assert devices.is_file()


def test_docs_boards_commands_parse(tmp_path: Path) -> None:
    commands = []
    for line in _fenced_lines(BOARDS.read_text()):
        commands += _bnnbench_commands(line)
    seen = {tuple(c[:2]) if c[0] == "devices" else (c[0],) for c in commands}
    # the guide's main flows are all there (the extractor is not silently finding nothing)
    assert {
        ("devices", "add"),
        ("devices", "probe"),
        ("devices", "list"),
        ("agent",),
        ("submit",),
    } <= seen, seen
    assert len(commands) >= 12
    for args in commands:
        _check_cli(args, "docs/boards.md", tmp_path)


def test_deploy_files_commands_parse(tmp_path: Path) -> None:
    commands = []
    for script in SCRIPTS:
        commands += [(script.name, c) for c in _script_commands(script.read_text())]
    names = {w for w, _ in commands}
    assert names == {INSTALL.name, ADB_SETUP.name}, commands
    exe = shlex.split(_unit()["Service"]["ExecStart"])
    commands.append((UNIT.name, exe[1:]))
    for where, args in commands:
        _check_cli(args, where, tmp_path)


def test_docs_settings_names_exist() -> None:
    """Every BNNBENCH_* variable the guide names is a real setting."""
    from bnnbench.settings import ClientSettings, CoordinatorSettings

    real = {f"BNNBENCH_AGENT_{f.upper()}" for f in AgentSettings.model_fields}
    real |= {f"BNNBENCH_{f.upper()}" for f in CoordinatorSettings.model_fields}
    real |= {f"BNNBENCH_{f.upper()}" for f in ClientSettings.model_fields}
    real |= {"BNNBENCH_NATIVE_LIB", "BNNBENCH_SKIP_NATIVE"}  # native.engine, setup.py
    named = set(re.findall(r"BNNBENCH_[A-Z_]+[A-Z]", BOARDS.read_text()))
    assert named, "no settings named?"
    assert named <= real, named - real


def test_compose_file_names_real_settings_and_commands(tmp_path: Path) -> None:
    """docker-compose.yml (no Docker daemon here: checked, not run): each service's BNNBENCH_*
    variables are settings of what it runs, its command and the image's CMD parse against the
    real CLI, the health check asks the real health path, and every secret a service mounts is
    declared."""
    import yaml

    from bnnbench.schemas import Endpoint
    from bnnbench.settings import CoordinatorSettings

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    coordinator = {f"BNNBENCH_{f.upper()}" for f in CoordinatorSettings.model_fields}
    agent = {f"BNNBENCH_AGENT_{f.upper()}" for f in AgentSettings.model_fields}
    for name, real in (("coordinator", coordinator), ("agent", agent)):
        named = {k for k in services[name]["environment"] if k.startswith("BNNBENCH_")}
        assert named and named <= real, (name, named - real)
        for secret in services[name].get("secrets", []):
            assert secret in compose["secrets"], (name, secret)
    _check_cli(services["agent"]["command"][1:], "docker-compose.yml agent", tmp_path)
    cmd = re.search(r"^CMD (\[.*\])$", (DEPLOY / "docker" / "Dockerfile").read_text(), re.M)
    assert cmd, "the Dockerfile has a CMD"
    _check_cli(json.loads(cmd[1])[1:], "deploy/docker/Dockerfile", tmp_path)
    assert f"8321{Endpoint.HEALTH}" in " ".join(services["coordinator"]["healthcheck"]["test"])
    assert services["coordinator"]["build"]["dockerfile"] == "deploy/docker/Dockerfile"


# ------------------------------------------------------------------ the scripts, run on fakes


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


FAKE_ADB = r"""
case "$1" in
  start-server) exit 0 ;;
  version) echo "Android Debug Bridge version 1.0.41"; exit 0 ;;
  devices)
    echo "List of devices attached"
    [ -n "$FAKE_NO_PHONES" ] && exit 0
    echo "R58M123ABC             device usb:1-1 product:x1q model:SM_G981B transport_id:1"
    echo "192.168.1.23:5555      device product:p model:Pixel_7 transport_id:2"
    echo "ZY22ABCD               unauthorized usb:1-2 transport_id:3"
    echo "EMU1                   offline transport_id:4"
    printf '%s %s %s\n' 0123456789ABCDEF "no permissions (user in plugdev group; are your" \
      "udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-4"
    exit 0 ;;
  -s)
    serial=$2; key=$5
    [ "$3" = shell ] && [ "$4" = getprop ] || exit 1
    cat >/dev/null  # like adb shell: would eat the caller's stdin
    case "$serial:$key" in
      R58M123ABC:ro.product.model) printf 'SM-G981B\r\n' ;;
      R58M123ABC:ro.product.manufacturer) printf 'samsung\r\n' ;;
      R58M123ABC:ro.soc.model) printf 'SM8250\r\n' ;;
      R58M123ABC:ro.product.cpu.abi) printf 'arm64-v8a\r\n' ;;
      R58M123ABC:ro.build.version.release) printf '13\r\n' ;;
      192.168.1.23:5555:ro.product.model) echo 'Pixel 7' ;;
      192.168.1.23:5555:ro.board.platform) echo 'gs201' ;;
      192.168.1.23:5555:ro.product.cpu.abi) echo 'arm64-v8a' ;;
      *) echo ;;
    esac ;;
esac
"""


def _run_adb_setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _fake(bin_dir, "adb", FAKE_ADB)
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
    return subprocess.run(
        ["bash", str(ADB_SETUP), "--no-rules", "--devices", "lab.toml"],
        capture_output=True,
        text=True,
        env=full,
        timeout=60,
        check=False,
    )


def test_adb_setup_lists_phones_and_prints_devices_add(tmp_path: Path) -> None:
    proc = _run_adb_setup(tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "R58M123ABC: samsung SM-G981B, SoC SM8250, arm64-v8a, Android 13" in out
    assert "192.168.1.23:5555: ? Pixel 7, SoC gs201, arm64-v8a" in out  # ro.board.platform
    adds = re.findall(r"^\s+bnnbench (devices add \S+ --devices \S+)$", out, re.M)
    assert adds == [
        "devices add adb://R58M123ABC --devices lab.toml",
        "devices add adb://192.168.1.23:5555 --devices lab.toml",
        "devices add adb://PHONE_IP:5555 --devices lab.toml",
    ], out  # network hint
    assert "ZY22ABCD: unauthorized: unlock the phone and accept" in out
    assert "EMU1: offline:" in out and "0123456789ABCDEF: no permissions:" in out
    assert "adb connect PHONE_IP:5555" in out and "2 phone(s) ready" in out
    for line in adds:
        _check_cli(shlex.split(line), "setup-adb-host.sh output", tmp_path)


def test_adb_setup_without_phones_exits_1(tmp_path: Path) -> None:
    proc = _run_adb_setup(tmp_path, FAKE_NO_PHONES="1")
    assert proc.returncode == 1 and "no phone is ready" in proc.stdout


FAKE_SSH = r"""
printf '%q ' ssh "$@" >> "$FAKE_LOG"; echo >> "$FAKE_LOG"
while [ $# -gt 0 ]; do case $1 in -o|-i|-p) shift 2 ;; -*) shift ;; *) break ;; esac; done
shift  # USER@HOST
case "$*" in
  true) exit 0 ;;
  mktemp*) echo /tmp/bnnbench-install.AbC123 ;;
  "bash -s") cat > "$FAKE_SCRIPT" ;;
  *) exit 9 ;;
esac
"""
FAKE_SCP = r"""
printf '%q ' scp "$@" >> "$FAKE_LOG"; echo >> "$FAKE_LOG"
"""


def _run_install(
    tmp_path: Path, *args: str, token: str | None
) -> tuple[subprocess.CompletedProcess[str], str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _fake(bin_dir, "ssh", FAKE_SSH)
    _fake(bin_dir, "scp", FAKE_SCP)
    sdist = tmp_path / "bnnbench-0.1.0.tar.gz"
    sdist.write_bytes(b"not really a tarball")
    log, script = tmp_path / "argv.log", tmp_path / "remote.sh"
    env = {k: v for k, v in os.environ.items() if k != "BNNBENCH_AGENT_TOKEN"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_LOG=str(log), FAKE_SCRIPT=str(script))
    if token is not None:
        env["BNNBENCH_AGENT_TOKEN"] = token
    proc = subprocess.run(
        ["bash", str(INSTALL), "--sdist", str(sdist), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return (
        proc,
        log.read_text() if log.exists() else "",
        script.read_text() if script.exists() else "",
    )


def test_install_agent_keeps_the_token_off_every_command_line(tmp_path: Path) -> None:
    token = "tok-5e3c2b71a9"
    key = tmp_path / "id_ed25519"
    key.write_text("a private key\n")
    proc, argv_log, remote = _run_install(
        tmp_path,
        "-i",
        str(key),
        "--name",
        "pi4-lab",
        "pi@pi4.local",
        "http://coordinator.lan:8321",
        token=token,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = argv_log.splitlines()
    assert [c.split()[0] for c in calls] == ["ssh", "ssh", "scp", "ssh"], argv_log
    for c in calls:
        assert "BatchMode=yes" in c and "StrictHostKeyChecking" not in c, c
        assert "pi@pi4.local" in c
    assert "bnnbench-agent.service" in calls[2] and "/tmp/bnnbench-install.AbC123/" in calls[2]
    # the token travels only inside the script on ssh's stdin
    assert token not in argv_log and token not in proc.stdout + proc.stderr
    assert token in remote
    assert "remote_install ()" in remote
    call = [
        line
        for line in remote.splitlines()
        if line.startswith("remote_install ") and "()" not in line
    ]
    assert len(call) == 1 and shlex.split(call[0])[1:] == [
        "python3",
        "http://coordinator.lan:8321",
        token,
        "pi4-lab",
        "",
        "/tmp/bnnbench-install.AbC123",
        "bnnbench-0.1.0.tar.gz",
    ]
    syntax = subprocess.run(
        ["bash", "-n"], input=remote, capture_output=True, text=True, check=False
    )
    assert syntax.returncode == 0, syntax.stderr
    # what the board is told to do
    for needle in (
        "sys.version_info < (3, 11)",
        "apt-get install",
        "useradd --system",
        "/opt/bnnbench/venv",
        "chmod 0600",
        "chown bnnbench:bnnbench",
        "/etc/bnnbench/agent.env",
        "systemctl enable",
        "journalctl -u",
    ):
        assert needle in remote, needle


def test_install_agent_refuses_without_a_token_or_a_terminal(tmp_path: Path) -> None:
    proc, argv_log, _ = _run_install(tmp_path, "pi@pi4.local", "http://c:8321", token=None)
    assert proc.returncode == 1 and "BNNBENCH_AGENT_TOKEN" in proc.stderr
    assert argv_log == ""  # nothing reached the board


@pytest.mark.parametrize(
    "args, message",
    [
        (["pi4.local", "http://c:8321"], "USER@HOST"),
        (["pi@pi4.local", "c:8321"], "http://"),
        (["--extras", "fleet;rm", "pi@pi4.local", "http://c:8321"], "--extras"),
    ],
)
def test_install_agent_checks_its_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    proc, argv_log, _ = _run_install(tmp_path, *args, token="t")
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert argv_log == ""


def test_install_agent_usage(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(INSTALL), "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "USER@HOST COORDINATOR_URL" in proc.stdout
    proc = subprocess.run(
        ["bash", str(INSTALL)],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
