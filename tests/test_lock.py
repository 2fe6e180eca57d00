"""The lock files agree with pyproject.toml: what CI, `make install` and the
image install is what the project asks for (`make lock` rewrites them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Built from source by scripts/install-llama-cpp.sh, not installed from a lock.
BUILT_HERE = {"llama-cpp-python"}


def pins(requirements: list[str]) -> dict[str, str]:
    found = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        found[_normal(name.split("[")[0])] = version
    return found


def locked(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    return {
        _normal(match[0]): match[1]
        for match in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.M)
    }


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_is_locked_at_its_pinned_version() -> None:
    runtime = pins(PROJECT["dependencies"])
    dev = pins(PROJECT["optional-dependencies"]["dev"])
    assert all(runtime.values()) and all(dev.values()), "pin every dependency (==)"
    runtime_lock, dev_lock = (
        locked("requirements.lock"),
        locked("requirements-dev.lock"),
    )
    for name, version in runtime.items():
        if name not in BUILT_HERE:
            assert runtime_lock.get(name) == version, name
            assert dev_lock.get(name) == version, name
    for name, version in dev.items():
        assert dev_lock.get(name) == version, name
    assert not BUILT_HERE & (runtime_lock.keys() | dev_lock.keys())


def test_the_lock_has_a_hash_for_every_package() -> None:
    for name in ("requirements.lock", "requirements-dev.lock"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / name).read_text())
        packages = [e for e in entries if "==" in e.split("\n", 1)[0]]
        assert packages
        assert all("--hash=sha256:" in entry for entry in packages), name
