"""Package list for the one `preedit` namespace.

The product card fixes the top-level folders `training/`, `export/`, `client/` and `perf/`; they
are the sources of `preedit.training`, `preedit.export`, `preedit.client` and `preedit.perf`
(the `package-dir` mapping lives in pyproject.toml). This file only enumerates subpackages, which
declarative `packages.find` cannot remap.
"""

from setuptools import find_packages, setup

STAGES = ("training", "export", "client", "perf")

packages = ["preedit"] + [f"preedit.{p}" for p in find_packages("preedit")]
for stage in STAGES:
    packages += [f"preedit.{stage}"] + [f"preedit.{stage}.{p}" for p in find_packages(stage)]

setup(packages=packages)
