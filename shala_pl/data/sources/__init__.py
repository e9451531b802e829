"""The registry of vote-data sources: ``load_source(name, path, on_invalid=..., **options) -> ReadResult``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Optional, Union, get_args

from shala_pl import checks
from shala_pl.data.example import OnInvalid, ReadResult
from shala_pl.data.sources.chaosnli import read_chaosnli
from shala_pl.data.sources.goemotions import read_goemotions
from shala_pl.data.sources.jsonl import read_jsonl
from shala_pl.data.sources.msp_podcast import read_msp_podcast
from shala_pl.data.sources.nli import read_nli
from shala_pl.data.sources.synthetic import read_synthetic

# source name -> (reader, arguments the registry fixes); every other keyword of the reader is a user option
_READERS: dict[str, tuple[Callable[..., ReadResult], dict]] = {
    "chaosnli_snli": (read_chaosnli, {"variant": "snli"}),
    "chaosnli_mnli": (read_chaosnli, {"variant": "mnli"}),
    "chaosnli_alphanli": (read_chaosnli, {"variant": "alphanli"}),
    "snli": (read_nli, {}),
    "mnli": (read_nli, {}),
    "goemotions": (read_goemotions, {}),
    "msp_podcast": (read_msp_podcast, {}),
    "jsonl": (read_jsonl, {}),
    "synthetic": (read_synthetic, {}),
}
SOURCE_NAMES = tuple(_READERS)
_PATHLESS = {"synthetic"}


def load_source(source: str, path: Union[str, Path, None], *, on_invalid: OnInvalid = "error",
                **options) -> ReadResult:
    """Read ``source`` from ``path`` (a file or folder, as the source expects; ignored by ``synthetic``).

    Bad records raise a DataError (``on_invalid="error"``) or are skipped and counted by reason in
    ``ReadResult.skipped`` (``"skip"``).
    """
    if source not in _READERS:
        raise ValueError(f"unknown source {source!r}; valid sources: {', '.join(SOURCE_NAMES)}")
    checks.one_of("on_invalid", on_invalid, get_args(OnInvalid))
    reader, fixed = _READERS[source]
    accepted = source_options(source)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"source {source!r} got unknown option(s) {unknown}; "
                        f"it accepts {sorted(accepted) if accepted else 'no options'}")
    if source not in _PATHLESS:
        path = _existing_path(source, path)
    return reader(path, on_invalid=on_invalid, **fixed, **options)


def source_options(source: str) -> dict[str, object]:
    """The options ``source`` accepts, with their defaults."""
    reader, fixed = _READERS[source]
    parameters = inspect.signature(reader).parameters
    return {name: parameter.default for name, parameter in parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "on_invalid" and name not in fixed}


def _existing_path(source: str, path: Optional[Union[str, Path]]) -> Path:
    if path is None:
        raise ValueError(f"source {source!r} needs a path")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file or folder: {path}")
    return path
