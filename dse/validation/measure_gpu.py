"""The GPU under ``dse measure``: device, NVML counters and clocks, timers, the timed-run loop.

Needs PyTorch (with CUDA) and NVML (``nvidia-ml-py``, imported as ``pynvml``), both imported
lazily, so this module imports without them; using the GPU without them raises
:class:`dse.spec.errors.DseError` with a one-line reason. ``device="cpu"`` gives the same
interface on the host clock (no NVML, no energy). Shared by :mod:`dse.validation.measure`
and :mod:`dse.validation.tp_decoder`; the method is in :mod:`dse.validation.measure`.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dse.spec.errors import DseError


def log(msg: str) -> None:
    print(f"[dse measure] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- imports


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise DseError("dse measure needs PyTorch: pip install 'llm-dse[measure]' (torch, nvidia-ml-py)") from None
    return torch


def import_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise DseError("dse measure needs NVML bindings: pip install nvidia-ml-py") from None
    return pynvml



# --------------------------------------------------------------------------- device / NVML


class Gpu:
    """The CUDA device, its NVML handle and static facts."""

    def __init__(self, device: int | str) -> None:
        torch = import_torch()
        self.torch = torch
        self.is_cuda = str(device) != "cpu"
        self.nvml = None
        self.handle = None
        self.energy_ok = False
        self.driver = ""
        if not self.is_cuda:
            self.device = torch.device("cpu")
            self.name = "cpu"
            self.platform = "cpu"
            return
        if not torch.cuda.is_available():
            raise DseError("dse measure: torch sees no CUDA GPU (torch.cuda.is_available() is False)")
        index = int(device)
        if index >= torch.cuda.device_count():
            raise DseError(f"dse measure: no CUDA device {index} (found {torch.cuda.device_count()})")
        self.device = torch.device("cuda", index)
        torch.cuda.set_device(self.device)
        props = torch.cuda.get_device_properties(self.device)
        self.name = props.name
        self.platform = platform_name(props.name)
        pynvml = import_nvml()
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise DseError(f"dse measure: NVML did not initialise: {exc}") from None
        self.nvml = pynvml
        self.handle = self._nvml_handle(props, index)
        self.driver = nvml_text(pynvml.nvmlSystemGetDriverVersion())
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.energy_ok = True
        except pynvml.NVMLError:
            self.energy_ok = False

    def _nvml_handle(self, props: Any, index: int) -> Any:
        pynvml = self.nvml
        uuid = getattr(props, "uuid", None)
        if uuid is not None:
            text = str(uuid)
            for cand in (text, "GPU-" + text):
                try:
                    return pynvml.nvmlDeviceGetHandleByUUID(cand)
                except (pynvml.NVMLError, TypeError, ValueError):
                    pass
        bus = getattr(props, "pci_bus_id", None)
        if bus is not None:
            dom = getattr(props, "pci_domain_id", 0)
            dev = getattr(props, "pci_device_id", 0)
            try:
                return pynvml.nvmlDeviceGetHandleByPciBusId(f"{dom:08x}:{bus:02x}:{dev:02x}.0")
            except pynvml.NVMLError:
                pass
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def sync(self) -> None:
        if self.is_cuda:
            self.torch.cuda.synchronize(self.device)

    def energy_mj(self) -> float:
        if not self.energy_ok:
            return math.nan
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def power_limit_w(self) -> float:
        if self.nvml is None:
            return math.nan
        try:
            return self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1000.0
        except self.nvml.NVMLError:
            return math.nan

    def max_sm_clock(self) -> float:
        if self.nvml is None:
            return math.nan
        try:
            return float(self.nvml.nvmlDeviceGetMaxClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
        except self.nvml.NVMLError:
            return math.nan

    def sample(self) -> dict[str, float]:
        """One reading of clocks (MHz), power (W) and temperature (C)."""
        out = {"sm": math.nan, "mem": math.nan, "power": math.nan, "temp": math.nan}
        if self.nvml is None:
            return out
        nv, h = self.nvml, self.handle
        for key, fn in (("sm", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                        ("mem", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
                        ("power", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                        ("temp", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))):
            try:
                out[key] = float(fn())
            except nv.NVMLError:
                pass
        return out

    def idle_power_w(self, seconds: float) -> float:
        """Mean board power over ``seconds`` of nothing (after 1 s to let clocks settle)."""
        if not self.is_cuda or seconds <= 0:
            return math.nan
        self.sync()
        time.sleep(1.0)
        with Sampler(self) as sampler:
            e0, t0 = self.energy_mj(), time.perf_counter()
            time.sleep(seconds)
            e1, t1 = self.energy_mj(), time.perf_counter()
        if self.energy_ok:
            return (e1 - e0) / 1000.0 / (t1 - t0)
        return sampler.mean("power")

    def heat(self, seconds: float) -> float:
        """Run bf16 matrix products for ``seconds``; returns the GPU temperature (C) after."""
        if not self.is_cuda or seconds <= 0:
            return math.nan
        torch = self.torch
        a = torch.randn(8192, 8192, device=self.device, dtype=torch.bfloat16)
        b = torch.randn_like(a)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(20):
                torch.mm(a, b)
            self.sync()
        del a, b
        torch.cuda.empty_cache()
        return self.sample()["temp"]

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass


def nvml_text(value: Any) -> str:
    """An NVML string (``bytes`` in older bindings) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def platform_name(gpu_name: str) -> str:
    """Platform preset name for a GPU name: ``h100-sxm`` for an H100 SXM/HBM3, else the name."""
    upper = gpu_name.upper()
    if "H100" in upper and ("SXM" in upper or "HBM3" in upper):
        return "h100-sxm"
    return gpu_name


class Sampler:
    """Background thread sampling NVML clocks/power/temperature every ``period_s``."""

    def __init__(self, gpu: Gpu, period_s: float = 0.05) -> None:
        self.gpu, self.period = gpu, period_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.gpu.sample())
            self._stop.wait(self.period)

    def __enter__(self) -> Sampler:
        if self.gpu.nvml is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self, key: str) -> float:
        vals = [s[key] for s in self.samples if not math.isnan(s[key])]
        return sum(vals) / len(vals) if vals else math.nan


class Timer:
    """CUDA events on a GPU, the host clock on the CPU."""

    def __init__(self, gpu: Gpu) -> None:
        self.gpu = gpu
        torch = gpu.torch
        if gpu.is_cuda:
            self.a = torch.cuda.Event(enable_timing=True)
            self.b = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.gpu.is_cuda:
            self.a.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.gpu.is_cuda:
            self.b.record()
        else:
            self.t1 = time.perf_counter()

    def seconds(self) -> float:
        if self.gpu.is_cuda:
            self.b.synchronize()
            return self.a.elapsed_time(self.b) / 1000.0
        return self.t1 - self.t0


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])



# --------------------------------------------------------------------------- timed runs


def run_timed(gpu: Gpu, body: Callable[[], Any], *, repeats: int, min_s: float, soft_s: float, min_runs: int = 1,
              agree: Callable[[float], float] = lambda seconds: seconds,
              ready: Callable[[], None] | None = None) -> dict[str, Any]:
    """Warm once, then time ``body`` back to back, with energy and NVML samples around the timed runs.

    Runs: ``repeats``, fewer (down to ``min_runs``) where they would take over ``soft_s``, and more
    where needed to last ``min_s`` seconds (for the energy counter). ``agree`` turns the warm-up
    time into the one every process uses (tensor parallelism: the slowest rank's) so that all
    ranks run the same count; ``ready`` waits before the timed window (default: ``gpu.sync``).
    Returns the run times, their count ``n``, the window's ``wall_s`` and ``energy_j`` (NVML's
    total-energy counter, else the sampled power times the wall time; NaN on the CPU), the
    ``method`` and the ``sampler``.
    """
    t = Timer(gpu)
    t.start()
    body()
    t.stop()
    warm_s = max(agree(t.seconds()), 1e-9)
    n = min(repeats, max(min_runs, int(soft_s / warm_s)))
    n = max(1, min(max(n, math.ceil(min_s / warm_s)), 100000))
    timers = [Timer(gpu) for _ in range(n)]
    (ready or gpu.sync)()
    with Sampler(gpu) as sampler:
        e0, w0 = gpu.energy_mj(), time.perf_counter()
        for tm in timers:
            tm.start()
            body()
            tm.stop()
        gpu.sync()
        e1, w1 = gpu.energy_mj(), time.perf_counter()
    times = [tm.seconds() for tm in timers]
    wall = w1 - w0
    if gpu.energy_ok:
        energy_j, method = (e1 - e0) / 1000.0, "nvml_total_energy"
    elif gpu.is_cuda:
        energy_j, method = sampler.mean("power") * wall, "nvml_power_samples"
    else:
        energy_j, method = math.nan, "none"
    return {"times": times, "n": n, "wall_s": wall, "energy_j": energy_j, "method": method, "sampler": sampler}
