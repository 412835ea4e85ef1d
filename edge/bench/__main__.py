"""Run every benchmark in edge.bench.SUITE, one after the other."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import time

from . import SUITE


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = argv or list(SUITE)
    failed = []
    for name in names:
        module, what = SUITE[name]
        if importlib.util.find_spec(module) is None:
            print(f"== {name}: not available in this install ({module})\n", flush=True)
            continue
        print(f"== {name}: {what}", flush=True)
        t0 = time.perf_counter()
        rc = importlib.import_module(module).main([])
        print(f"== {name} done in {time.perf_counter() - t0:.1f} s (exit {rc})\n", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"Failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
