"""The device probe on this machine, /proc/cpuinfo parsing, profiles and backend self-checks."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge import backends
from edge.device import GIB, DeviceInfo, check_backends, load_profile, parse_cpuinfo, probe, profile_names
from edge.errors import InvalidOption

PROFILES = {"pi4-4gb", "pi5-8gb", "pi-zero-2w", "macbook-air-m1-8gb", "macbook-air-m2-16gb", "laptop-x86-16gb",
            "laptop-x86-16gb-nvidia", "android-arm64-8gb", "iphone-15-pro"}

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
PI5_FEATURES = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n"
X86_CPUINFO = "model name\t: Some CPU\nflags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512_vnni\n"


def test_probe_this_machine():
    d = probe()
    assert d.name == "this device"
    assert d.arch in ("x86_64", "arm64")
    assert 1 <= d.physical_cores <= d.logical_cores
    assert 0 < d.ram_available <= d.ram_total
    flags = Path("/proc/cpuinfo").read_text()
    if d.arch == "x86_64":
        assert ("avx2" in d.simd) == (" avx2" in flags)
        assert ("fma" in d.simd) == (" fma" in flags)
    assert set(d.backends) == set(backends.REGISTRY)
    for name, st in d.backends.items():
        assert st.installed == backends.installed(name)
        assert st.loads is None  # not checked without check=True


def test_fingerprint_is_stable_and_ignores_free_memory():
    a, b = probe(), probe()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    a.ram_available //= 2
    assert a.fingerprint == b.fingerprint
    a.physical_cores += 1
    assert a.fingerprint != b.fingerprint


def test_parse_cpuinfo_arm_and_x86():
    assert parse_cpuinfo(PI4_CPUINFO) == ("Cortex-A72", ["neon"])
    model, simd = parse_cpuinfo(PI5_FEATURES)
    assert model == "Cortex-A76" and simd == ["dotprod", "fp16", "neon"]
    assert parse_cpuinfo(X86_CPUINFO) == ("Some CPU", ["avx", "avx2", "avx512-vnni", "avx512f", "f16c", "fma", "sse4.2"])
    assert parse_cpuinfo("") == ("", [])


def test_every_profile_loads_and_round_trips():
    assert set(profile_names()) >= PROFILES
    for name in profile_names():
        d = load_profile(name)
        assert d.name == name and d.description and d.ram_available <= d.ram_total
        again = DeviceInfo.from_dict(d.to_dict())
        assert again.fingerprint == d.fingerprint and again.ram_total == d.ram_total
        assert set(d.backends) <= set(backends.REGISTRY)


def test_profile_facts():
    zero = load_profile("pi-zero-2w")
    assert zero.ram_total < 512 * 2**20 and zero.raspberry_pi.startswith("Raspberry Pi Zero 2 W")
    assert load_profile("iphone-15-pro").export_only
    nv = load_profile("laptop-x86-16gb-nvidia")
    assert nv.gpu_offload and nv.vram_total == 8 * GIB
    m1 = load_profile("macbook-air-m1-8gb")
    assert m1.apple_chip == "Apple M1" and m1.unified_memory and m1.metal and m1.installed("mlx")
    assert not load_profile("pi4-4gb").installed("mlx")
    assert load_profile("android-arm64-8gb").facts()["android"]


def test_unknown_profile_is_a_one_line_error():
    with pytest.raises(InvalidOption) as e:
        load_profile("pi7")
    assert "pi4-4gb" in str(e.value) and "\n" not in str(e.value)


def test_backend_self_checks_load_a_model():
    names = [n for n in backends.REGISTRY if backends.installed(n)]
    res = check_backends(names)
    assert set(res) == set(names)
    for name, (ok, detail) in res.items():
        assert ok, f"{name}: {detail}"
    if "llama.cpp" in res:
        assert "SmolLM2-135M-Instruct" in res["llama.cpp"][1]


def test_backend_self_check_reports_a_timeout():
    ok, detail = check_backends(["llama.cpp"], timeout=0.01)["llama.cpp"]
    assert not ok and detail.startswith("timed out")
