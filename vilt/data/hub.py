"""Opening ``datasets`` sources: hub names, local directories, in-memory objects; picking a
split; finding columns by feature type; reading rows lazily.

Images stay undecoded (``datasets.Image(decode=False)``) until ``load_image`` decodes them in
the DataLoader worker, so PIL errors come out as :class:`ImageError` naming the row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import datasets

from .errors import DataError

T = TypeVar("T")
HFData = datasets.Dataset | datasets.IterableDataset

# A missing "test" split falls back to "validation" and back (imagefolder: test/ or val/).
_SPLIT_ALIASES = {"test": ("validation", "val", "valid"), "validation": ("test", "val", "valid")}


def open_hf(
    source: Any, *, split: str, streaming: bool = False, **load_kwargs: Any
) -> tuple[HFData, str]:
    """(data set of ``split``, a name for messages) from a hub name, a local directory
    (``datasets.load_dataset`` infers imagefolder, JSON, CSV, parquet; a ``save_to_disk``
    directory is read with ``load_from_disk``), or a Dataset / DatasetDict object."""
    if isinstance(source, datasets.Dataset | datasets.IterableDataset):
        data, name = source, "in-memory dataset"
    elif isinstance(source, datasets.DatasetDict | datasets.IterableDatasetDict):
        data, name = pick_split(source, split, "in-memory DatasetDict"), "in-memory dataset"
    elif isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        path = Path(source)
        if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(name)
        elif path.exists() or not isinstance(source, str):
            if not path.is_dir():
                raise DataError(f"{path}: expected a directory of a data set")
            loaded = datasets.load_dataset(name, streaming=streaming, **load_kwargs)
        else:
            loaded = datasets.load_dataset(source, streaming=streaming, **load_kwargs)
        if isinstance(loaded, datasets.DatasetDict | datasets.IterableDatasetDict):
            data = pick_split(loaded, split, name)
        else:
            data = loaded
        name = f"{name} [{split}]"
    else:
        raise TypeError(
            f"cannot load a data set from {type(source).__name__}: pass a hub name, a "
            "directory, or a datasets.Dataset / DatasetDict"
        )
    if streaming and isinstance(data, datasets.Dataset):
        # shards let DataLoader workers split the rows (a worker reads whole shards)
        data = data.to_iterable_dataset(num_shards=max(1, min(len(data), 32)))
    return data, name


def pick_split(dd: Any, split: str, name: str) -> HFData:
    """``dd[split]``, or its alias (test <-> validation/val/valid), or a clear error."""
    for candidate in (split, *_SPLIT_ALIASES.get(split, ())):
        if candidate in dd:
            return dd[candidate]
    raise DataError(f"{name}: no split {split!r}; it has {sorted(dd.keys())}")


def find_column(
    features: datasets.Features | None,
    *,
    kind: type | None,
    given: str | None,
    names: Sequence[str] = (),
    what: str,
    source: str,
) -> str:
    """The column named ``given``; else the first of feature type ``kind`` (if any); else the first
    of ``names`` present. A clear error lists the columns when none fits."""
    columns = list(features or {})
    if given is not None:
        if given not in columns:
            raise DataError(f"{source}: no {what} column {given!r}; columns are {columns}")
        return given
    for col, feature in (features or {}).items():
        if kind is not None and isinstance(feature, kind):
            return col
    for col in names:
        if col in columns:
            return col
    feature_text = f"no {kind.__name__} feature, " if kind is not None else ""
    raise DataError(
        f"{source}: cannot find the {what} column ({feature_text}none of {list(names)}); "
        f"columns are {columns}; name it explicitly"
    )


def undecoded(data: HFData, column: str) -> HFData:
    """The same data with ``column`` left as {"bytes", "path"} so vilt decodes it."""
    features = data.features
    if features is not None and isinstance(features.get(column), datasets.Image):
        return data.cast_column(column, datasets.Image(decode=False))
    return data


class RowRecords(Sequence[T]):
    """A lazy sequence of records over a map-style Dataset: row i is read (one Arrow row,
    images undecoded) and turned into a record only when asked for."""

    def __init__(self, data: datasets.Dataset, to_record: Callable[[dict, int], T]) -> None:
        self.data = data
        self.to_record = to_record

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> T:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.to_record(self.data[index], index)


class RowImage:
    """Row ``index``'s image from a one-column, undecoded Dataset, read when called: the
    lazy ``image`` of a record whose text is held in memory."""

    __slots__ = ("data", "index")

    def __init__(self, data: datasets.Dataset, index: int) -> None:
        self.data = data
        self.index = index

    def __call__(self) -> Any:
        return self.data[self.index][self.data.column_names[0]]
