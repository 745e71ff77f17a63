"""A file a user names (``--params-from``, ``--claim``), read and parsed in one place.

At most :data:`MAX_DOCUMENT_BYTES` are read (such a file holds a few hundred bytes; a
mistaken path to a dataset or a device must not fill the memory), as UTF-8, then parsed as
YAML or JSON. Each way the file cannot be had is one :class:`BadSetting` line naming it:
missing, a directory, unreadable, too large, not UTF-8, not valid YAML/JSON (at its line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lgals.errors import BadSetting

MAX_DOCUMENT_BYTES = 1 << 20  # 1 MiB


def read_document(path: str | Path, where: str, kind: str = "YAML", hint: str = "") -> Any:
    """The document in ``path``: ``kind`` ``"YAML"`` or ``"JSON"``; ``where`` names the file
    in the error (e.g. ``--params-from params.yaml``), ``hint`` follows the line of a file
    that cannot be read (what else the option takes)."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as error:
        raise BadSetting(f"{where}: cannot read it ({error.strerror or error}){hint}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise BadSetting(f"{where}: larger than {MAX_DOCUMENT_BYTES >> 20} MiB, the most lgals "
                         f"reads of a {kind} file: is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadSetting(f"{where}: not UTF-8 text (byte {error.start}: "
                         f"{data[error.start:error.start + 1]!r}); save it as UTF-8") from None
    try:
        return json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise BadSetting(f"{where}: not valid JSON ({error.msg} at line {error.lineno}, "
                         f"column {error.colno})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BadSetting(f"{where}: not valid YAML ({problem}{at})") from None
    except RecursionError:
        raise BadSetting(f"{where}: nested too deeply to read as {kind}") from None
