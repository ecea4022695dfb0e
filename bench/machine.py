"""The machine a benchmark ran on, written into every result file.

Timings on these machines depend on the CPU model (an Intel CPU with
AVX-512 runs TensorFlow's oneDNN kernels; an AMD EPYC without AVX-512 does
not), so every result names it.
"""

import os
import platform


def _cpuinfo():
    """The first processor's fields in /proc/cpuinfo ({} where there is
    none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (or `platform.processor()`)."""
    return (
        _cpuinfo().get("model name") or platform.processor() or "unknown"
    )


def cpu_kind():
    """"family F model M" from /proc/cpuinfo: which generation the model
    name leaves out (an "AMD EPYC" is Zen 3 at family 25 model 1, Zen 4
    at model 17), or "" where it is not there."""
    fields = _cpuinfo()
    if "cpu family" in fields and "model" in fields:
        return f"family {fields['cpu family']} model {fields['model']}"
    return ""


def has_avx512():
    return "avx512f" in _cpuinfo().get("flags", "").split()


def onednn_enabled():
    """Whether TensorFlow's oneDNN path is on (its default on x86 with
    AVX-512 unless TF_ENABLE_ONEDNN_OPTS=0)."""
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting is not None:
        return setting.strip() not in ("0", "false", "False")
    return has_avx512()


def describe():
    """A dict for result files: CPU model, cores, AVX-512, oneDNN."""
    return {
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),
        "cpus": os.cpu_count(),
        "avx512": has_avx512(),
        "onednn": onednn_enabled(),
        "platform": platform.platform(),
    }


def line(machine):
    """One line for Markdown tables: `CPU, N cores, oneDNN on/off`."""
    kind = machine.get("cpu_kind")
    cpu = f"{machine['cpu']} ({kind})" if kind else machine["cpu"]
    return (
        f"{cpu}, {machine['cpus']} cores, AVX-512 "
        f"{'yes' if machine['avx512'] else 'no'}, oneDNN "
        f"{'on' if machine['onednn'] else 'off'}"
    )
