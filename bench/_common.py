"""Helpers shared by the benchmark scripts (run as `python bench/<name>.py`, so this module imports as `_common`)."""
import os, platform

def cpu_name() -> str:
    "The CPU model (from /proc/cpuinfo where there is one) and the core count: the `device` of a CPU row."
    try: model = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): model = platform.processor() or platform.machine() or 'cpu'
    return f'cpu: {model} ({os.cpu_count()} cores)'
