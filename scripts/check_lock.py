#!/usr/bin/env python
"""Check that the installed packages have the versions pinned in requirements.lock.

Run by `make test`, `make train` and `make benchmark` before they start (not a pytest test:
the suite also runs in environments with their own torch). Compares every `name==version`
line of the lock with what this Python's environment has installed (importlib.metadata);
packages installed but not in the lock are not checked, and environment markers are not
evaluated (the lock is resolved for one platform: CPython 3.11, Linux x86_64). Standard
library only.

Exit status: 0 when everything matches, 1 when something differs (one line per package:
name, installed version, locked version), 2 when the lock cannot be read.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

DEFAULT_LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
HINT = "fix: make install   (or a clean one: rm -rf .venv && make test)"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*===?\s*([^\s;\\]+)")


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def canonical_version(version: str) -> str:
    """Enough of PEP 440 normalisation for equality: case, a leading v, trailing .0 of the release."""
    version = version.strip().lower().removeprefix("v")
    version, plus, local = version.partition("+")
    match = re.match(r"^(\d+(?:\.\d+)*)(.*)$", version)
    if match:
        release = re.sub(r"(\.0+)+$", "", match.group(1)) or "0"
        version = release + match.group(2)
    return version + plus + local


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: pinned version} from a pip requirements file of `name==version` lines."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # comments, --hash continuations, -r/-c/--index-url
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path}: not an exact pin: {raw.strip()!r}")
        pins[canonical_name(match.group(1))] = match.group(2)
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def mismatches(pins: dict[str, str]) -> list[tuple[str, str | None, str]]:
    """(name, installed version or None, locked version) for every pin that does not hold."""
    out = []
    for name, locked in sorted(pins.items()):
        have = installed_version(name)
        if have is None or canonical_version(have) != canonical_version(locked):
            out.append((name, have, locked))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check that this Python's installed packages match the pins in requirements.lock.",
        epilog=f"Exit 0 when all match, 1 on a mismatch, 2 when the lock cannot be read. {HINT}",
    )
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="the lock file (default: %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when everything matches")
    args = parser.parse_args(argv)

    try:
        pins = read_lock(args.lock)
    except (OSError, ValueError) as err:
        print(f"check_lock: {err}", file=sys.stderr)
        return 2

    bad = mismatches(pins)
    if not bad:
        if not args.quiet:
            print(f"check_lock: {len(pins)} packages match {args.lock.name} ({sys.executable})")
        return 0
    for name, have, locked in bad:
        state = f"installed {have}" if have is not None else "not installed"
        print(f"check_lock: {name}: {state}, locked {locked}", file=sys.stderr)
    print(
        f"check_lock: {len(bad)} of {len(pins)} packages differ from {args.lock} ({sys.executable}); {HINT}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
