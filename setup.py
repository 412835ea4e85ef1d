"""One installed top-level package, `edge`.

The converter, the apps and the catalog keep their own top-level folders in the
repo and install as `edge.converters`, `edge.apps` and `edge.models`, so nothing
collides with a user's own `models` or `apps`. Metadata lives in pyproject.toml.
"""
from setuptools import find_packages, setup

ROOTS = {"edge": "edge", "edge.converters": "converters", "edge.apps": "apps", "edge.models": "models"}

packages = []
for name, folder in ROOTS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

# Folders that hold only data files still count as packages to setuptools; listing them
# keeps their files in the install without a warning per folder.
packages += ["edge.converters.data", "edge.models.profiles"]

setup(packages=packages, package_dir=ROOTS)
