"""A dataset folder packed into parts of bounded size, losslessly, and unpacked again elsewhere.

For machines that receive files in limited amounts (a GPU machine reached by copying at most so many MiB
per command): 8-bit colour images are stored as lossless WebP (CamVid's PNGs: about 70% of their size),
everything else as it is. Each part is a folder ``<name>.<k>`` holding its files and a ``PACK.json`` that
lists them with the SHA-256 of each file's content, or, for a re-encoded image, of its decoded pixels
(shape, dtype and bytes as OpenCV reads them), so that unpacking proves the pixels unchanged.

Unpacking writes the original layout under a root (re-encoded images back as PNG, whose pixels equal the
original's) and records each finished part, so parts can arrive in separate commands::

    python -m seg.data.packing unpack PART [PART ...] --into ROOT   # exit 0: done; 2: a part is missing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seg.errors import DataError

MANIFEST = "PACK.json"
REENCODED = ".webp"  # lossless WebP (OpenCV: quality above 100)
WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]
MIB = 1024 * 1024


def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of an image's shape, dtype and bytes (what a lossless re-encoding must keep)."""
    digest = hashlib.sha256(f"{pixels.shape}{pixels.dtype}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Packed:
    """One file of the dataset as stored: its path under the dataset (``original``), under the part
    (``stored``), and the digest that unpacking checks."""

    original: str
    stored: str
    digest: str
    size: int

    @property
    def reencoded(self) -> bool:
        return self.stored != self.original


def encode(path: Path, relative: str) -> tuple[Packed, bytes]:
    """The file as stored: lossless WebP for an 8-bit 3-channel PNG when that is smaller (checked by decoding
    it back), else the file's own bytes."""
    raw = path.read_bytes()
    if path.suffix.lower() == ".png":
        pixels = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is not None and pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3:
            ok, webp = cv2.imencode(REENCODED, pixels, WEBP_LOSSLESS)
            if ok and len(webp) < len(raw):
                digest, back = pixel_digest(pixels), cv2.imdecode(webp, cv2.IMREAD_UNCHANGED)
                if back is None or pixel_digest(back) != digest:
                    raise DataError(f"{path}: lossless WebP did not give the same pixels back (OpenCV build?)")
                stored = str(Path(relative).with_suffix(REENCODED))
                return Packed(relative, stored, digest, len(webp)), webp.tobytes()
    return Packed(relative, relative, hashlib.sha256(raw).hexdigest(), len(raw)), raw


def pack(source: Path, out_dir: Path, name: str, part_mib: float) -> list[Path]:
    """Pack every file under ``source`` into folders ``out_dir/<name>.<k>`` of at most ``part_mib`` MiB each
    (files in sorted order; a file larger than a part gets a part of its own). Returns the part folders."""
    if not source.is_dir():
        raise DataError(f"{source}: not a folder")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if not files:
        raise DataError(f"{source}: no files to pack")
    parts: list[list[tuple[Packed, bytes]]] = [[]]
    used = 0
    for path in files:
        packed, content = encode(path, path.relative_to(source).as_posix())
        if parts[-1] and used + packed.size > part_mib * MIB:
            parts.append([])
            used = 0
        parts[-1].append((packed, content))
        used += packed.size
    for old in out_dir.glob(f"{name}.*"):  # an earlier packing of this dataset, maybe in more parts
        shutil.rmtree(old)
    folders = []
    for k, members in enumerate(parts, 1):
        folder = out_dir / f"{name}.{k}"
        for packed, content in members:
            target = folder / packed.stored
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        manifest = {
            "dataset": name,
            "part": k,
            "parts": len(parts),
            "files": [vars(packed) for packed, _ in members],
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        folders.append(folder)
    return folders


def read_manifest(part: Path) -> dict:
    path = part / MANIFEST
    if not path.is_file():
        raise DataError(f"{part}: no {MANIFEST}; not a part written by seg.data.packing")
    return json.loads(path.read_text())


def unpack_part(part: Path, root: Path) -> tuple[str, int, int]:
    """Write one part's files under ``root/<dataset>/`` with their digests checked; return (dataset, part,
    parts). A part already unpacked (its mark in ``root/.<dataset>.unpacked/``) is skipped."""
    manifest = read_manifest(part)
    dataset, k, total = manifest["dataset"], manifest["part"], manifest["parts"]
    marks = root / f".{dataset}.unpacked"
    if (marks / str(k)).is_file():
        return dataset, k, total
    for entry in manifest["files"]:
        packed = Packed(**entry)
        stored, target = part / packed.stored, root / dataset / packed.original
        target.parent.mkdir(parents=True, exist_ok=True)
        if packed.reencoded:
            pixels = cv2.imread(str(stored), cv2.IMREAD_UNCHANGED)
            if pixels is None or pixel_digest(pixels) != packed.digest:
                raise DataError(f"{stored}: decoded pixels differ from the packed image's")
            if not cv2.imwrite(str(target), pixels):
                raise DataError(f"{target}: cannot write")
        else:
            shutil.copyfile(stored, target)
            if file_digest(target) != packed.digest:
                raise DataError(f"{stored}: content differs from the packed file's")
    marks.mkdir(parents=True, exist_ok=True)
    (marks / str(k)).write_text(json.dumps(manifest["parts"]))
    return dataset, k, total


def missing_parts(root: Path, dataset: str, total: int) -> list[int]:
    marks = root / f".{dataset}.unpacked"
    return [k for k in range(1, total + 1) if not (marks / str(k)).is_file()]


def unpack(parts: list[Path], root: Path) -> dict[str, list[int]]:
    """Unpack ``parts`` under ``root``; return ``{dataset: parts still missing}`` for every dataset seen."""
    totals = {}
    for part in parts:
        dataset, k, total = unpack_part(part, root)
        totals[dataset] = total
        print(f"{part}: {dataset} part {k} of {total} in {root / dataset}", flush=True)
    return {dataset: missing_parts(root, dataset, total) for dataset, total in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seg.data.packing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    unpack_args = sub.add_parser("unpack", help="unpack parts under a root")
    unpack_args.add_argument("parts", nargs="+", type=Path)
    unpack_args.add_argument("--into", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        missing = unpack(args.parts, args.into)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    incomplete = {dataset: ks for dataset, ks in missing.items() if ks}
    for dataset, ks in incomplete.items():
        print(f"{dataset}: part(s) {', '.join(map(str, ks))} not unpacked yet; carry them in a command first")
    return 2 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
