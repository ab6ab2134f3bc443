"""Runs every benchmark, prints its table, then one table of the issue's targets, met or not."""

from __future__ import annotations

import importlib
import pkgutil

import bench
from bench.targets import Target, render


def main() -> None:
    targets: list[Target] = []
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name.endswith("_bench"):
            module = importlib.import_module(f"bench.{info.name}")
            print(f"\n== {info.name} ==", flush=True)
            found = module.main()
            if found:
                targets.extend(found)
    print("\n" + render(targets), flush=True)


if __name__ == "__main__":
    main()
