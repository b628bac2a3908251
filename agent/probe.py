"""What a device is (identity, SoC, clusters) and the state it measures in (readings), read
through any transport with one POSIX shell script.

The same script runs on this machine (``sh``), a Raspberry Pi over ssh and a phone's toybox
shell over adb, so there is one definition of each reading. It prints sections headed
``@@name``; a reading a device lacks is an empty section, and is left out rather than guessed.

Identity: a device is named by a stable fingerprint, never by its hostname (two Pis both
called ``raspberrypi`` are two devices): the Android serial (``ro.serialno``, else the adb
serial), the board serial from ``/proc/cpuinfo``, ``/etc/machine-id``, or the macOS hardware
UUID, in that order. The ABI and an exec wrapper are part of the fingerprint: the same
machine running aarch64 code under qemu is another benchmark target than the machine itself.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from typing import Any

from agent.device import MACOS_FEATURES, parse_isa_flags
from agent.transports.base import Transport, TransportError
from bnnbench.schemas import CpuCluster, DeviceInfo

PROBE_TIMEOUT_S = 60.0

# cpufreq, thermal, throttling and battery: read before and after every benchmark
_READINGS = r"""
echo @@cpufreq
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -d "$d" ] || continue
  f="$d/cpufreq"
  printf '%s %s %s %s %s %s\n' "${d##*/}" \
    "$(cat "$f/cpuinfo_max_freq" 2>/dev/null || echo -)" \
    "$(cat "$f/scaling_cur_freq" 2>/dev/null || echo -)" \
    "$(cat "$f/scaling_governor" 2>/dev/null || echo -)" \
    "$(cat "$f/scaling_max_freq" 2>/dev/null || echo -)" \
    "$(cat "$f/related_cpus" 2>/dev/null | tr ' ' ',' || echo -)"
done
echo @@thermal
for z in /sys/class/thermal/thermal_zone*; do
  [ -r "$z/temp" ] || continue
  printf '%s\t%s\t%s\n' "${z##*/}" "$(cat "$z/type" 2>/dev/null)" "$(cat "$z/temp" 2>/dev/null)"
done
echo @@throttled
command -v vcgencmd >/dev/null 2>&1 && vcgencmd get_throttled 2>/dev/null
echo @@battery
command -v dumpsys >/dev/null 2>&1 && dumpsys battery 2>/dev/null
echo @@loadavg
cat /proc/loadavg 2>/dev/null
echo @@end
"""

READINGS_SCRIPT = _READINGS

PROBE_SCRIPT = (
    r"""
echo @@uname
uname -m 2>/dev/null
echo @@kernel
uname -sr 2>/dev/null
echo @@hostname
hostname 2>/dev/null || cat /proc/sys/kernel/hostname 2>/dev/null
echo @@os-release
cat /etc/os-release 2>/dev/null
echo @@model
cat /proc/device-tree/model 2>/dev/null | tr -d '\000'
echo @@machine-id
cat /etc/machine-id 2>/dev/null
echo @@cpuinfo
cat /proc/cpuinfo 2>/dev/null
echo @@meminfo
grep -i '^MemTotal' /proc/meminfo 2>/dev/null
echo @@nproc
getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null
echo @@getprop
command -v getprop >/dev/null 2>&1 && getprop 2>/dev/null
echo @@sysctl
if [ "$(uname -s 2>/dev/null)" = Darwin ]; then
  for k in machdep.cpu.brand_string hw.model hw.memsize hw.ncpu hw.perflevel0.physicalcpu \
           hw.perflevel1.physicalcpu hw.perflevel0.name hw.perflevel1.name \
           kern.osproductversion hw.optional.neon hw.optional.AdvSIMD \
           hw.optional.arm.FEAT_DotProd hw.optional.arm.FEAT_FP16 hw.optional.avx2_0 \
           hw.optional.avx512f hw.optional.avx512bw hw.optional.popcnt; do
    printf '%s=%s\n' "$k" "$(sysctl -n "$k" 2>/dev/null)"
  done
  printf 'uuid=%s\n' "$(ioreg -rd1 -c IOPlatformExpertDevice 2>/dev/null \
    | sed -n 's/.*IOPlatformUUID" = "\(.*\)"/\1/p')"
fi
echo @@tools
for t in taskset python3 vcgencmd sha256sum; do
  p="$(command -v "$t" 2>/dev/null)" && printf '%s=%s\n' "$t" "$p"
done
"""
    + _READINGS
)

# ARM "CPU part" numbers (implementer 0x41) of the cores on BiBench's boards
CPU_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xc07": "Cortex-A7",
}

ANDROID_ABIS = {"aarch64": "arm64-v8a", "armv7l": "armeabi-v7a", "armv8l": "armeabi-v7a"}


def sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = out.setdefault(line[2:].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v).strip() for k, v in out.items()}


def _kv(text: str, sep: str = "=") -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, s, v = line.partition(sep)
        if s:
            out[k.strip()] = v.strip()
    return out


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` with no argument prints ``[name]: [value]`` lines."""
    return {m[1]: m[2] for m in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.M)}


def _int(s: str | None) -> int | None:
    s = (s or "").strip()
    return int(s) if s.isdigit() else None


def cpu_list(spec: str) -> list[int]:
    """``0-3,7`` or ``0,1,2`` -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for part in spec.replace(" ", ",").split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            if a.isdigit() and b.isdigit():
                out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
    return sorted(set(out))


def parse_cpuinfo(text: str) -> tuple[dict[str, str], dict[int, str]]:
    """First value of every key, and each processor's ``CPU part`` (ARM)."""
    first: dict[str, str] = {}
    parts: dict[int, str] = {}
    cpu: int | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        first.setdefault(key, value)
        if key == "processor" and value.isdigit():
            cpu = int(value)
        elif key == "cpu part" and cpu is not None:
            parts[cpu] = value.lower()
    return first, parts


def parse_readings(text: str) -> dict[str, Any]:
    """The readings sections of a probe or readings script, as stored with each result."""
    sec = sections(text)
    out: dict[str, Any] = {}
    governors: dict[str, str] = {}
    cur: dict[str, int] = {}
    cap: dict[str, int] = {}
    for line in sec.get("cpufreq", "").splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        if (k := _int(f[2])) is not None:
            cur[f[0]] = k
        if f[3] != "-":
            governors[f[0]] = f[3]
        if len(f) > 4 and (k := _int(f[4])) is not None:
            cap[f[0]] = k
    if governors:
        distinct = sorted(set(governors.values()))
        out["governor"] = distinct[0] if len(distinct) == 1 else distinct
        out["governors"] = governors
    if cur:
        out["cur_freq_khz"] = cur
    if cap:
        out["scaling_max_freq_khz"] = cap
    temps: dict[str, float] = {}
    for line in sec.get("thermal", "").splitlines():
        f = line.split("\t")
        if len(f) == 3:
            try:
                milli = int(f[2].strip())
            except ValueError:
                continue
            # most kernels report milli-degrees; a few report degrees
            temps[f"{f[0]}:{f[1]}"] = milli / 1000.0 if abs(milli) > 1000 else float(milli)
    if temps:
        out["temperatures_c"] = temps
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", sec.get("throttled", ""))
    if m:
        out["throttled"] = m[1]
    battery = _kv(sec.get("battery", ""), ":")
    if battery:
        bat: dict[str, Any] = {}
        if (lvl := _int(battery.get("level"))) is not None:
            bat["level"] = lvl
        powered = [
            k for k in ("AC powered", "USB powered", "Wireless powered") if battery.get(k) == "true"
        ]
        bat["charging_source"] = powered
        if (t := _int(battery.get("temperature"))) is not None:
            bat["temperature_c"] = t / 10.0  # dumpsys reports tenths of a degree
        out["battery"] = bat
    load = sec.get("loadavg", "").split()
    if len(load) >= 3:
        with contextlib.suppress(ValueError):
            out["loadavg"] = [float(x) for x in load[:3]]
    return out


def _clusters(sec: dict[str, str], parts: dict[int, str], cores: int) -> list[CpuCluster]:
    """Cores grouped by ``related_cpus`` (one cpufreq policy = one cluster), else by max
    frequency; clusters sorted fastest first."""
    groups: dict[str, list[int]] = defaultdict(list)
    max_khz: dict[int, int] = {}
    for line in sec.get("cpufreq", "").splitlines():
        f = line.split()
        if not f or not f[0].startswith("cpu") or not f[0][3:].isdigit():
            continue
        cpu = int(f[0][3:])
        if (k := _int(f[1] if len(f) > 1 else None)) is not None:
            max_khz[cpu] = k
        related = f[5] if len(f) > 5 and f[5] != "-" else ""
        key = related or (f"f{max_khz[cpu]}" if cpu in max_khz else "all")
        groups[key].append(cpu)
    if not groups:
        groups["all"] = list(range(cores))
    out = []
    for cpus in groups.values():
        cpus = sorted(cpus)
        khz = [max_khz[c] for c in cpus if c in max_khz]
        names = sorted({CPU_PARTS.get(parts[c], parts[c]) for c in cpus if c in parts})
        out.append(
            CpuCluster(
                cpus=cpus,
                max_freq_khz=max(khz) if khz else None,
                core=", ".join(names) or None,
            )
        )
    out.sort(key=lambda c: (-(c.max_freq_khz or 0), c.cpus))
    return out


def parse_probe(
    text: str,
    *,
    transport: str,
    serial: str | None = None,
    exec_wrapper: str | None = None,
    abi: str | None = None,
    name: str | None = None,
) -> DeviceInfo:
    """DeviceInfo from the probe script's output. ``serial`` is the transport's own id of the
    device (the adb serial); ``abi`` overrides the probed ABI (an exec wrapper's target)."""
    sec = sections(text)
    props = parse_getprop(sec.get("getprop", ""))
    sysctl = _kv(sec.get("sysctl", ""))
    tools = _kv(sec.get("tools", ""))
    cpu_fields, parts = parse_cpuinfo(sec.get("cpuinfo", ""))
    uname_m = sec.get("uname", "").strip() or "unknown"
    android = bool(props)
    arch = uname_m
    probed_abi = props.get("ro.product.cpu.abi") or ANDROID_ABIS.get(uname_m, uname_m)
    if uname_m == "arm64":  # macOS spelling
        probed_abi = "arm64"
    final_abi = abi or probed_abi
    if abi:  # emulated: the code runs as the wrapper's target
        arch = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7l"}.get(abi, abi)
    cores = _int(sec.get("nproc")) or max((*parts.keys(), -1)) + 1 or 1

    model_dt = sec.get("model", "").strip("\x00 \n") or None
    soc = (
        props.get("ro.soc.model")
        or props.get("ro.board.platform")
        or _pi_soc(model_dt)
        or cpu_fields.get("hardware")
        or sysctl.get("machdep.cpu.brand_string")
        or None
    )
    board = props.get("ro.product.model") or model_dt or sysctl.get("hw.model") or None
    cpu_model = (
        cpu_fields.get("model name")
        or sysctl.get("machdep.cpu.brand_string")
        or _core_names(parts)
        or cpu_fields.get("hardware")
        or arch
    )
    flags_raw = cpu_fields.get("flags") or cpu_fields.get("features") or ""
    flags_raw += " " + " ".join(
        flag for key, flag in MACOS_FEATURES.items() if sysctl.get(key) == "1"
    )
    isa = parse_isa_flags(flags_raw, uname_m)

    identity, source = _identity(props, cpu_fields, sec, sysctl, serial)
    hostname = sec.get("hostname", "").strip() or props.get("net.hostname") or "unknown"
    if source == "hostname":
        identity = f"host:{hostname}"

    ram_mb = None
    m = re.search(r"(\d+)\s*kB", sec.get("meminfo", ""))
    if m:
        ram_mb = int(m[1]) // 1024
    elif (b := _int(sysctl.get("hw.memsize"))) is not None:
        ram_mb = b >> 20

    if android:
        os_name = f"Android {props.get('ro.build.version.release', '?')}"
        if sec.get("kernel"):
            os_name += f" ({sec['kernel']})"
    elif sysctl.get("kern.osproductversion"):
        os_name = f"macOS {sysctl['kern.osproductversion']} ({sec.get('kernel', '')})"
    else:
        pretty = _kv(sec.get("os-release", "")).get("PRETTY_NAME", "").strip('"')
        os_name = f"{sec.get('kernel', '')} ({pretty})" if pretty else sec.get("kernel", "")

    readings = parse_readings(text)
    runtimes_present = {k: v for k, v in tools.items() if v}
    if exec_wrapper:  # the host's CPU features say nothing about the emulated one
        isa = []
        cpu_model = f"{cpu_model} (emulating {arch} with {exec_wrapper.rsplit('/', 1)[-1]})"
    return DeviceInfo(
        hostname=hostname,
        arch=arch,
        os=os_name.strip() or "unknown",
        cpu_model=cpu_model,
        cores=cores,
        isa_flags=isa,
        transport=transport,
        identity=identity,
        identity_source=source,
        name=name,
        soc=soc,
        board=board,
        abi=final_abi,
        ram_mb=ram_mb,
        clusters=_clusters(sec, parts, cores),
        governor=readings.get("governor")
        if isinstance(readings.get("governor"), str)
        else (",".join(readings["governor"]) if readings.get("governor") else None),
        tools=runtimes_present,
        emulated=exec_wrapper is not None,
        exec_wrapper=exec_wrapper,
    )


def _pi_soc(model: str | None) -> str | None:
    """Raspberry Pi boards name their SoC only through the board model."""
    if not model:
        return None
    for board, soc in (
        ("Pi 5", "BCM2712"),
        ("Pi 4", "BCM2711"),
        ("Pi 3", "BCM2837"),
        ("Pi Zero 2", "BCM2710A1"),
    ):
        if f"Raspberry {board}" in model:
            return soc
    return None


def _core_names(parts: dict[int, str]) -> str | None:
    if not parts:
        return None
    count: dict[str, int] = defaultdict(int)
    for p in parts.values():
        count[CPU_PARTS.get(p, f"ARM part {p}")] += 1
    return " + ".join(f"{n}x {name}" for name, n in sorted(count.items(), key=lambda t: -t[1]))


def _identity(
    props: dict[str, str],
    cpu: dict[str, str],
    sec: dict[str, str],
    sysctl: dict[str, str],
    serial: str | None,
) -> tuple[str, str]:
    if props.get("ro.serialno"):
        return f"android:{props['ro.serialno']}", "ro.serialno"
    if serial:
        return f"adb:{serial}", "adb serial"
    board_serial = cpu.get("serial", "").strip()
    if board_serial and board_serial.strip("0"):
        return f"board:{board_serial}", "cpuinfo serial"
    mid = sec.get("machine-id", "").strip()
    if re.fullmatch(r"[0-9a-f]{32}", mid):
        return f"machine-id:{mid}", "machine-id"
    if sysctl.get("uuid"):
        return f"mac:{sysctl['uuid']}", "IOPlatformUUID"
    return "", "hostname"


def probe(
    transport: Transport,
    *,
    exec_wrapper: str | None = None,
    abi: str | None = None,
    name: str | None = None,
) -> DeviceInfo:
    """Probe a device through its transport (raises TransportError when unreachable)."""
    if exec_wrapper and not abi:
        abi = wrapper_abi(exec_wrapper)
    res = transport.run(PROBE_SCRIPT, timeout=PROBE_TIMEOUT_S)
    if res.timed_out or "@@uname" not in res.stdout:
        raise TransportError(f"probing {transport.address} failed: {res.describe()}")
    serial = getattr(transport, "serial", None)
    return parse_probe(
        res.stdout,
        transport=transport.name,
        serial=serial,
        exec_wrapper=exec_wrapper,
        abi=abi,
        name=name,
    )


def wrapper_abi(exec_wrapper: str) -> str | None:
    """The ABI an emulator runs (qemu-aarch64-static -> arm64-v8a, qemu-arm -> armeabi-v7a)."""
    name = exec_wrapper.split()[0].rsplit("/", 1)[-1]
    if name.startswith("qemu-aarch64"):
        return "arm64-v8a"
    if name.startswith("qemu-arm"):
        return "armeabi-v7a"
    return None


def readings(transport: Transport) -> dict[str, Any]:
    """Frequencies, governors, temperatures, throttling and battery now (empty on failure:
    a missing reading must not fail a benchmark)."""
    res = transport.run(READINGS_SCRIPT, timeout=30.0)
    if res.timed_out:
        return {}
    return parse_readings(res.stdout)
