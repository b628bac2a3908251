"""The device probe's parser on recorded outputs of its script (a Raspberry Pi 4, a Pi 3B+
on a 32-bit OS, an Apple M1), device identity, and the coordinator's device selectors."""

from __future__ import annotations

from agent.probe import parse_probe, parse_readings, wrapper_abi

PI4_CPUINFO = (
    "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd08\n\n"
        for i in range(4)
    )
    + "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: {serial}\nModel\t\t: Raspberry Pi 4\n"
)


def pi_probe(serial: str, hostname: str = "raspberrypi", temp: str = "48686") -> str:
    cpufreq = "".join(f"cpu{i} 1800000 600000 ondemand 1800000 0,1,2,3\n" for i in range(4))
    return (
        "@@uname\naarch64\n@@kernel\nLinux 6.1.21-v8+\n"
        f"@@hostname\n{hostname}\n"
        '@@os-release\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
        "@@model\nRaspberry Pi 4 Model B Rev 1.4\n@@machine-id\n\n"
        f"@@cpuinfo\n{PI4_CPUINFO.format(serial=serial)}"
        "@@meminfo\nMemTotal:        3884328 kB\n@@nproc\n4\n@@getprop\n@@sysctl\n"
        "@@tools\ntaskset=/usr/bin/taskset\nvcgencmd=/usr/bin/vcgencmd\n"
        f"@@cpufreq\n{cpufreq}"
        f"@@thermal\nthermal_zone0\tcpu-thermal\t{temp}\n"
        "@@throttled\nthrottled=0x0\n@@battery\n@@loadavg\n0.10 0.20 0.30 1/200 999\n@@end\n"
    )


def test_two_pis_with_one_hostname_are_two_devices() -> None:
    a = parse_probe(pi_probe("10000000a1b2c3d4"), transport="ssh")
    b = parse_probe(pi_probe("10000000e5f6a7b8"), transport="ssh")
    assert a.hostname == b.hostname == "raspberrypi"
    assert a.fingerprint() != b.fingerprint()
    assert "raspberrypi" not in a.fingerprint()
    assert a.identity == "board:10000000a1b2c3d4" and a.identity_source == "cpuinfo serial"
    # the same board reached another way (its own local agent) is the same device
    assert (
        parse_probe(pi_probe("10000000a1b2c3d4"), transport="local").fingerprint()
        == a.fingerprint()
    )


def test_pi4_attributes() -> None:
    info = parse_probe(pi_probe("10000000a1b2c3d4"), transport="ssh")
    assert info.soc == "BCM2711" and info.board == "Raspberry Pi 4 Model B Rev 1.4"
    # one ABI vocabulary for boards and phones, so `--device abi=arm64-v8a` selects both
    assert info.abi == "arm64-v8a" and info.arch == "aarch64" and info.cores == 4
    assert info.cpu_model == "4x Cortex-A72"
    assert [(c.cpus, c.max_freq_khz, c.core) for c in info.clusters] == [
        ([0, 1, 2, 3], 1800000, "Cortex-A72")
    ]
    assert info.ram_mb == 3793 and info.governor == "ondemand"
    assert "neon" in info.isa_flags and info.tools["vcgencmd"] == "/usr/bin/vcgencmd"
    assert info.label() == "BCM2711" and not info.emulated


def test_pi3_on_a_32_bit_os_gets_the_armv7_build() -> None:
    text = pi_probe("00000000deadbeef").replace("@@uname\naarch64", "@@uname\narmv7l")
    text = text.replace("Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi 3 Model B Plus Rev 1.3")
    info = parse_probe(text, transport="ssh")
    assert info.abi == "armeabi-v7a" and info.soc == "BCM2837"
    from agent.runners.device_cli import cli_for_abi

    assert cli_for_abi(info.abi).parent.name == "armv7"


def test_exec_wrapper_makes_an_emulated_device_of_its_target() -> None:
    assert wrapper_abi("/usr/bin/qemu-aarch64-static") == "arm64-v8a"
    assert wrapper_abi("qemu-arm") == "armeabi-v7a" and wrapper_abi("valgrind") is None
    text = pi_probe("x").replace("@@uname\naarch64", "@@uname\nx86_64")
    text = text.replace("@@machine-id\n", "@@machine-id\n" + "ab" * 16 + "\n")
    native = parse_probe(text, transport="ssh")
    emu = parse_probe(text, transport="ssh", exec_wrapper="qemu-aarch64-static", abi="arm64-v8a")
    assert emu.emulated and emu.arch == "aarch64" and emu.isa_flags == []
    assert native.identity == emu.identity and native.fingerprint() != emu.fingerprint()
    assert emu.fingerprint().endswith("|emulated:qemu-aarch64-static")


def test_apple_m1_from_sysctl() -> None:
    text = (
        "@@uname\narm64\n@@kernel\nDarwin 23.1.0\n@@hostname\nmbp\n@@os-release\n@@model\n"
        "@@machine-id\n@@cpuinfo\n@@meminfo\n@@nproc\n8\n@@getprop\n@@sysctl\n"
        "machdep.cpu.brand_string=Apple M1\nhw.model=MacBookPro17,1\nhw.memsize=17179869184\n"
        "kern.osproductversion=14.1\nhw.optional.neon=1\nhw.optional.arm.FEAT_DotProd=1\n"
        "uuid=0A1B2C3D-0000-1111-2222-333344445555\n@@tools\n@@cpufreq\n@@thermal\n"
        "@@throttled\n@@battery\n@@loadavg\n@@end\n"
    )
    info = parse_probe(text, transport="local")
    assert info.soc == "Apple M1" and info.board == "MacBookPro17,1" and info.abi == "arm64"
    assert info.identity == "mac:0A1B2C3D-0000-1111-2222-333344445555"
    assert info.ram_mb == 16384 and info.os.startswith("macOS 14.1")
    assert {"neon", "asimddp"} <= set(info.isa_flags)


def test_readings_parse_throttling_and_battery() -> None:
    r = parse_readings(pi_probe("x").replace("throttled=0x0", "throttled=0x50005"))
    assert r["throttled"] == "0x50005"
    assert r["temperatures_c"] == {"thermal_zone0:cpu-thermal": 48.686}
    assert r["cur_freq_khz"]["cpu3"] == 600000 and r["loadavg"] == [0.1, 0.2, 0.3]
    phone = parse_readings(
        "@@battery\nCurrent Battery Service state:\n  AC powered: false\n  USB powered: true\n"
        "  level: 87\n  temperature: 312\n@@end\n"
    )
    assert phone["battery"] == {
        "level": 87,
        "charging_source": ["USB powered"],
        "temperature_c": 31.2,
    }
