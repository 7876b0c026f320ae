"""Read an offline W&B run file (.wandb) back, independently of the code that wrote it.

The file is a LevelDB-style log: a 7-byte W&B header, and 32 KiB blocks
of records (block 0 starts after the header), each with a 7-byte header (crc32 uint32, length uint16, type uint8:
1 full, 2 first, 3 middle, 4 last). Each joined payload is a wandb Record protobuf.
"""

import json
import struct
import time
from pathlib import Path

BLOCK = 32 * 1024


def read_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    records, pending = [], b""
    for start in range(0, len(data), BLOCK):
        block, offset = data[start : start + BLOCK], 7 if start == 0 else 0  # the header shares block 0
        while offset + 7 <= len(block):
            _, length, kind = struct.unpack("<IHB", block[offset : offset + 7])
            payload = block[offset + 7 : offset + 7 + length]
            offset += 7 + length
            if kind == 0 and length == 0:
                break
            pending = payload if kind in (1, 2) else pending + payload
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                records.append(record)
    return records


def run_files(run_dir: Path, timeout: float = 30.0) -> list[Path]:
    """The offline run files under ``run_dir/wandb``, each once complete: W&B's service process may still be
    writing a file when ``run.finish()`` has returned (seen: only the 7-byte header, read right after), so wait
    until its last record is the run's ``exit`` record (the file is written in order)."""
    paths = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + timeout
    for path in paths:
        while not _ends_with_exit(path):
            assert time.monotonic() < deadline, f"{path}: no exit record after {timeout} s"
            time.sleep(0.05)
    return paths


def _ends_with_exit(path: Path) -> bool:
    try:
        records = read_records(path)
    except Exception:  # noqa: BLE001 - a record cut off mid-write: not complete yet
        return False
    return bool(records) and records[-1].WhichOneof("record_type") == "exit"


def history_rows(run_dir: Path) -> list[dict]:
    """Every logged history row of the offline run(s) under ``run_dir/wandb``."""
    rows = []
    for path in run_files(run_dir):
        for record in read_records(path):
            if record.WhichOneof("record_type") == "history":
                row = {}
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    row[key] = json.loads(item.value_json)
                rows.append(row)
    return rows


def summary_values(run_dir: Path) -> dict:
    """The run summary as written (the last value of each key wins)."""
    values = {}
    for path in run_files(run_dir):
        for record in read_records(path):
            if record.WhichOneof("record_type") == "summary":
                for item in record.summary.update:
                    values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def config_values(run_dir: Path) -> dict:
    """The run config as written (at init and by later updates; the last value of each key wins)."""
    values = {}
    for path in run_files(run_dir):
        for record in read_records(path):
            kind = record.WhichOneof("record_type")
            items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
            for item in items:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def _records(run_dir: Path, kind: str) -> list:
    return [
        record
        for path in run_files(run_dir)
        for record in read_records(path)
        if record.WhichOneof("record_type") == kind
    ]


def run_info(run_dir: Path) -> dict:
    """The run record: name, group, job_type, tags (of the first run file)."""
    run = _records(run_dir, "run")[0].run
    return {"name": run.display_name, "group": run.run_group, "job_type": run.job_type, "tags": list(run.tags)}


def artifacts(run_dir: Path) -> list[dict]:
    """Every artifact logged: name, type, aliases, metadata and the manifest's file names."""
    return [
        {
            "name": record.artifact.name,
            "type": record.artifact.type,
            "aliases": list(record.artifact.aliases),
            "metadata": json.loads(record.artifact.metadata or "{}"),
            "files": [entry.path for entry in record.artifact.manifest.contents],
        }
        for record in _records(run_dir, "artifact")
    ]


def metric_definitions(run_dir: Path) -> dict:
    """define_metric records: name (or glob) -> {step_metric, summary: [the summaries kept]}."""
    out = {}
    for record in _records(run_dir, "metric"):
        metric = record.metric
        summary = [field.name for field, value in metric.summary.ListFields() if value]
        out[metric.name or metric.glob_name] = {"step_metric": metric.step_metric, "summary": summary}
    return out
