"""The device probe: what this machine is and which backends really work on it.

`probe()` returns a `DeviceInfo`: OS, CPU, SIMD features, memory, GPUs,
Raspberry Pi / Apple silicon facts and the installed backends. With
`check=True` (what `edge doctor` does) each installed backend also loads a
tiny model in a child process, so a library that crashes cannot take the
probe down. Devices we cannot run here are profiles: the same fields as data
in `models/profiles/<name>.json`, read by `load_profile`.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from . import backends
from .errors import InvalidOption

GIB = 1 << 30

# /proc/cpuinfo flag -> the name we report, on x86 and on ARM.
X86_FLAGS = {"sse4_2": "sse4.2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
             "avx512f": "avx512f", "avx512_vnni": "avx512-vnni", "avx512_bf16": "avx512-bf16",
             "avx_vnni": "avx-vnni", "amx_tile": "amx"}
ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "asimdhp": "fp16",
             "sve": "sve", "sve2": "sve2", "bf16": "bf16"}
# macOS sysctl hw.optional.* -> the same names as on Linux/ARM.
MAC_ARM_FLAGS = {"hw.optional.neon": "neon", "hw.optional.arm.FEAT_DotProd": "dotprod",
                 "hw.optional.arm.FEAT_I8MM": "i8mm", "hw.optional.arm.FEAT_FP16": "fp16",
                 "hw.optional.arm.FEAT_BF16": "bf16"}
# ARM "CPU part" ids, for boards whose /proc/cpuinfo has no model name.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510",
             "0xd47": "Cortex-A710", "0xd4d": "Cortex-A715", "0xd4e": "Cortex-X3"}
ARCH_ALIASES = {"aarch64": "arm64", "amd64": "x86_64", "x64": "x86_64", "armv8": "arm64"}

# Fields that identify the hardware; the tune cache is keyed by their hash.
FINGERPRINT_FIELDS = ("os", "arch", "cpu_model", "physical_cores", "logical_cores", "simd",
                      "apple_chip", "raspberry_pi", "gpu_offload")


@dataclass
class BackendStatus:
    """One backend on this device: installed, version, and whether it loads a model."""

    installed: bool = field(default=False, metadata={"help": "Its library can be imported."})
    version: str | None = field(default=None, metadata={"help": "Version of its Python package."})
    loads: bool | None = field(default=None, metadata={"help": "Loaded and ran a tiny model (None: not checked)."})
    detail: str = field(default="", metadata={"help": "What was loaded, or why it failed."})


def _d(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class DeviceInfo:
    """Facts about a device that selection and `edge doctor` use. Memory is in bytes."""

    name: str = _d("this device", "Profile name, or 'this device' for the probed machine.")
    description: str = _d("", "A line describing the device (profiles).")
    os: str = _d("", "linux, darwin, windows, android or ios.")
    arch: str = _d("", "x86_64 or arm64.")
    cpu_model: str = _d("", "CPU model name.")
    physical_cores: int = _d(1, "Physical CPU cores.")
    logical_cores: int = _d(1, "Logical CPUs (hardware threads).")
    performance_cores: int | None = _d(None, "Performance cores on big.LITTLE chips (Apple, phones).")
    simd: list = _d(None, "SIMD features: avx2, avx512f, fma, f16c on x86; neon, dotprod, i8mm on ARM.")
    ram_total: int = _d(0, "Total RAM in bytes.")
    ram_available: int = _d(0, "RAM available to a new process, in bytes.")
    memory_bandwidth_gbs: float | None = _d(None, "Peak memory bandwidth in GB/s (profiles: published figure; "
                                                   "this device: `edge doctor` measures it).")
    bandwidth_source: str = _d("", "Where memory_bandwidth_gbs comes from.")
    apple_chip: str | None = _d(None, "Apple silicon chip, e.g. 'Apple M1'.")
    unified_memory: bool = _d(False, "CPU and GPU share the RAM (Apple silicon).")
    metal: bool = _d(False, "Metal GPU available.")
    nvidia: list = _d(None, "NVIDIA GPUs: [{'name', 'memory_total', 'memory_free'}] (bytes).")
    gpu_offload: bool = _d(False, "The installed llama.cpp can offload layers to a GPU (CUDA or Metal).")
    raspberry_pi: str | None = _d(None, "Raspberry Pi model from /proc/device-tree/model.")
    export_only: bool = _d(False, "No Python backend runs here: models are exported to an app.")
    backends: dict = _d(None, "Backend name -> BackendStatus.")

    def __post_init__(self):
        self.simd = list(self.simd or [])
        self.nvidia = list(self.nvidia or [])
        self.backends = {k: v if isinstance(v, BackendStatus) else BackendStatus(**v)
                         for k, v in (self.backends or {}).items()}

    @property
    def fingerprint(self) -> str:
        """A stable id of the hardware (not of free memory), for the tune cache."""
        key = {f: getattr(self, f) for f in FINGERPRINT_FIELDS}
        key["ram_gib"] = round(self.ram_total / GIB)
        key["gpus"] = sorted(g.get("name", "") for g in self.nvidia)
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def vram_total(self) -> int:
        return sum(int(g.get("memory_total", 0)) for g in self.nvidia)

    def installed(self, backend: str) -> bool:
        st = self.backends.get(backend)
        return bool(st and st.installed)

    def facts(self) -> dict:
        """The flat facts the selection rules match on."""
        return {
            "name": self.name, "os": self.os, "arch": self.arch, "export_only": self.export_only,
            "apple_silicon": bool(self.apple_chip), "nvidia": bool(self.nvidia),
            "gpu_offload": self.gpu_offload, "metal": self.metal,
            "raspberry_pi": bool(self.raspberry_pi), "android": self.os == "android",
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backends"] = {k: asdict(v) for k, v in self.backends.items()}
        d["fingerprint"] = self.fingerprint
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "DeviceInfo":
        """Build from a dict of fields; `<field>_gib` gives a memory field in GiB, and a
        backend given as a version string is taken as installed."""
        names = {f.name for f in fields(cls)}
        kw = {}
        for key, value in data.items():
            if key.endswith("_gib") and key[:-4] in names:
                kw[key[:-4]] = int(float(value) * GIB)
            elif key in names:
                kw[key] = value
        kw["nvidia"] = [
            {**{k[:-4] if k.endswith("_gib") else k: int(float(v) * GIB) if k.endswith("_gib") else v
                for k, v in g.items()}}
            for g in data.get("nvidia") or []
        ]
        bks = {}
        for name, value in (data.get("backends") or {}).items():
            if isinstance(value, str):
                value = {"installed": True, "version": value}
            bks[backends.canonical(name)] = BackendStatus(**value)
        kw["backends"] = bks
        return cls(**kw)


# -- profiles ---------------------------------------------------------------------
def profile_names() -> list[str]:
    from edge.models import profiles

    return sorted(profiles())


def load_profile(name: str) -> DeviceInfo:
    """The DeviceInfo of a named profile (models/profiles/<name>.json)."""
    from edge.models import profiles

    data = profiles().get(name)
    if data is None:
        raise InvalidOption(f"Unknown device profile '{name}'.", f"Choose one of: {', '.join(profile_names())}.")
    return DeviceInfo.from_dict({**data, "name": name})


# -- the probe ------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _sysctl(key: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """(model name, SIMD features) from the text of /proc/cpuinfo (x86 or ARM)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "processor name") and not model and not value.isdigit():
            model = value
        elif key == "cpu part" and not model:
            model = ARM_PARTS.get(value.lower(), f"ARM part {value}")
        elif key in ("flags", "features"):
            flags.update(value.split())
    table = ARM_FLAGS if "asimd" in flags or "neon" in flags else X86_FLAGS
    simd = sorted({table[f] for f in flags if f in table})
    return model, simd


def _nvidia() -> list[dict]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines() if out.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            try:
                gpus.append({"name": parts[0], "memory_total": int(float(parts[1])) << 20,
                             "memory_free": int(float(parts[2])) << 20})
            except ValueError:
                continue
    return gpus


def _os_name() -> str:
    system = platform.system().lower()
    if system == "linux" and ("ANDROID_ROOT" in os.environ or "com.termux" in os.environ.get("PREFIX", "")):
        return "android"
    return system


@lru_cache(maxsize=1)
def _static() -> dict:
    """The facts that do not change while the process runs."""
    import psutil

    osname = _os_name()
    arch = platform.machine().lower()
    arch = ARCH_ALIASES.get(arch, arch)
    model, simd = parse_cpuinfo(_read("/proc/cpuinfo"))
    d = {"os": osname, "arch": arch, "cpu_model": model or platform.processor() or arch, "simd": simd,
         "physical_cores": psutil.cpu_count(logical=False) or os.cpu_count() or 1,
         "logical_cores": psutil.cpu_count(logical=True) or os.cpu_count() or 1}
    if osname == "darwin":
        d["cpu_model"] = _sysctl("machdep.cpu.brand_string") or d["cpu_model"]
        if arch == "arm64":
            d["apple_chip"] = d["cpu_model"]
            d["unified_memory"] = True
            d["metal"] = True
            d["simd"] = sorted(name for key, name in MAC_ARM_FLAGS.items() if _sysctl(key) == "1") or ["neon"]
            perf = _sysctl("hw.perflevel0.physicalcpu")
            d["performance_cores"] = int(perf) if perf.isdigit() else None
    pi = _read("/proc/device-tree/model").strip("\x00\n ")
    if "raspberry pi" in pi.lower():
        d["raspberry_pi"] = pi
    d["nvidia"] = _nvidia()
    d["gpu_offload"] = bool(backends.fact("llama.cpp", "gpu_offload", False)) if (d["nvidia"] or d.get("metal")) else False
    return d


def installed_backends() -> dict[str, BackendStatus]:
    return {name: BackendStatus(installed=backends.installed(name), version=backends.version(name))
            for name in backends.REGISTRY}


def probe(check: bool = False, timeout: float = 120.0) -> DeviceInfo:
    """Probe this machine. With check=True each installed backend loads a tiny model (seconds)."""
    import psutil

    mem = psutil.virtual_memory()
    info = DeviceInfo(**_static(), ram_total=mem.total, ram_available=mem.available, backends=installed_backends())
    if check:
        for name, status in check_backends([n for n, s in info.backends.items() if s.installed], timeout).items():
            info.backends[name].loads, info.backends[name].detail = status
    return info


# -- backend self-checks: each backend module's self_check(), in a child process ----------
def check_backends(names: list[str], timeout: float = 120.0) -> dict[str, tuple[bool, str]]:
    """Run each backend's self-check in its own process, in parallel: name -> (ok, detail)."""
    procs = {}
    for name in names:
        if name in backends.REGISTRY:
            procs[name] = subprocess.Popen([sys.executable, "-m", "edge.device", name],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for name, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            out[name] = (False, f"timed out after {timeout:.0f} s")
            continue
        lines = stdout.strip().splitlines()
        try:
            res = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            res = None
        if p.returncode == 0 and isinstance(res, dict):
            out[name] = (bool(res["ok"]), res["detail"])
        else:
            err = (stderr.strip().splitlines() or [""])[-1]
            out[name] = (False, f"crashed (exit code {p.returncode}){': ' + err if err else ''}")
    return out


def _run_check(name: str) -> dict:
    try:
        return {"ok": True, "detail": backends.self_check(name)}
    except Exception as exc:  # the reason is the report
        msg = re.sub(r"\s+", " ", str(exc)).strip()
        return {"ok": False, "detail": f"{type(exc).__name__}: {msg}"[:300]}


if __name__ == "__main__":  # the child process of check_backends
    print(json.dumps(_run_check(sys.argv[1])))
