"""The pins in assets.json, shared by the page (__init__) and fetch.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS_FILE = HERE / "assets.json"
STATIC_DIR = HERE / "static"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # npm's dist.integrity: "sha512-<base64>"
    files: dict[str, str]  # tarball member -> file name in the static dir

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


def load_packages(path: Path = ASSETS_FILE) -> list[Package]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        Package(p["name"], p["version"], p["integrity"], dict(p["files"]))
        for p in data["packages"]
    ]
