"""Streaming tensor I/O: read model weights one tensor at a time, write safetensors shards incrementally.

Why: merging 7B+ models must not need RAM for a whole model or even a whole output shard. Inputs
are read one tensor at a time with positioned reads into a fresh buffer (the shard headers say
where each tensor lies). Not a memory map: pages of a mapped file that were touched stay resident
in the process until it unmaps the file, so mapping whole shards makes the resident memory grow to
the size of the inputs. The operating system's page cache still caches the files, without
counting against the process. Outputs are streamed: since the merge
knows every output tensor's name, shape and dtype before computing any of them, each shard's
safetensors header can be written first and the tensors appended after it, one at a time.

The safetensors layout written by :class:`SafetensorsShardWriter`::

    [8 bytes: N, little-endian u64][N bytes: JSON header, space-padded to a multiple of 8][data]
    header = {"__metadata__": {"format": "pt", ...},
              name: {"dtype": "BF16", "shape": [...], "data_offsets": [begin, end]}, ...}

Offsets are relative to the start of the data and tile it with no holes, in plan order. Tensors
are assigned to shards in plan order; a shard is closed when the next tensor would push it past
``max_shard_bytes`` (a tensor larger than that gets a shard of its own). Several shards are named
``model-00001-of-0000K.safetensors`` with a ``model.safetensors.index.json``; one is ``model.safetensors``.

Pickled ``.bin`` checkpoints can run arbitrary code when loaded, so they are refused unless the
user sets ``allow_pickle: true``; then they are read with ``torch.load(weights_only=True, mmap=True)``.
"""

from __future__ import annotations

import json
import math
import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from adaptlab.errors import ConfigError, ModelError
from adaptlab.runs import atomic_write_json

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

SAFETENSORS_DTYPE_CODES: dict[torch.dtype, str] = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
    torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
}
_DTYPE_BY_CODE = {code: dtype for dtype, code in SAFETENSORS_DTYPE_CODES.items()}

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX_FILE = "pytorch_model.bin.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024


def parse_dtype(name: str, key: str = "dtype") -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; an unknown name is a ConfigError naming ``key`` and the choices."""
    if name not in DTYPES:
        raise ConfigError(f"{key}: unknown dtype {name!r}; use one of: {', '.join(DTYPES)}")
    return DTYPES[name]


def tensor_nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


@dataclass(frozen=True)
class _StoredTensor:
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype | None  # None: a safetensors code adaptlab does not handle (kept in dtype_code)
    dtype_code: str
    offset: int = 0  # safetensors: first byte of the tensor in the file
    nbytes: int = 0


class ModelTensors:
    """Read-only, lazily loaded view of one HF model directory's weights.

    Names come in index order (sharded) or file order (files sorted by name, tensors by offset).
    ``shape``/``dtype``/``nbytes`` read only headers; ``get`` loads one tensor.
    """

    def __init__(self, path: str | Path, allow_pickle: bool = False):
        self.path = Path(path)
        self.allow_pickle = allow_pickle
        self._tensors: dict[str, _StoredTensor] = {}
        self._handles: dict[Path, Any] = {}
        self._pickled: dict[Path, dict[str, torch.Tensor]] = {}
        self._metadata: dict[str, str] = {}
        if not self.path.is_dir():
            raise ModelError(f"model directory {self.path} does not exist (or is not a directory)")
        try:
            self._open_weights()
        except BaseException:
            self.close()
            raise

    # -- discovery -------------------------------------------------------------------------------

    def _open_weights(self) -> None:
        directory = self.path
        if (directory / SINGLE_FILE).is_file():
            return self._open_files([directory / SINGLE_FILE])
        if (directory / INDEX_FILE).is_file():
            return self._open_index(directory / INDEX_FILE)
        safetensors_files = sorted(directory.glob("*.safetensors"))
        if safetensors_files:
            return self._open_files(safetensors_files)
        if (directory / PICKLE_FILE).is_file():
            return self._open_files([directory / PICKLE_FILE])
        if (directory / PICKLE_INDEX_FILE).is_file():
            return self._open_index(directory / PICKLE_INDEX_FILE)
        pickle_files = sorted(directory.glob("*.bin"))
        if pickle_files:
            return self._open_files(pickle_files)
        present = sorted(p.name for p in directory.iterdir())[:20]
        raise ModelError(
            f"no weights found in {directory}: expected {SINGLE_FILE}, {INDEX_FILE} or *.safetensors "
            f"(files there: {', '.join(present) or 'none'}). Is this an HF model directory saved with save_pretrained?"
        )

    def _open_index(self, index_path: Path) -> None:
        """Open the shards named by an index and check the index against what they really hold."""
        weight_map = _read_weight_map(index_path)
        shard_names = list(dict.fromkeys(weight_map.values()))
        shard_paths = []
        for shard in shard_names:
            shard_path = self.path / shard
            if not shard_path.is_file():
                tensor = next(name for name, file in weight_map.items() if file == shard)
                raise ModelError(f"{index_path}: shard {shard} (holding e.g. {tensor!r}) is missing from {self.path}")
            shard_paths.append(shard_path)
        self._open_files(shard_paths)
        for name, shard in weight_map.items():
            stored = self._tensors.get(name)
            if stored is None:
                raise ModelError(f"{index_path}: tensor {name!r} is listed in shard {shard} but is not in that file")
            if stored.file.name != shard:
                raise ModelError(
                    f"{index_path}: tensor {name!r} is listed in shard {shard} but is stored in {stored.file.name}")
        unlisted = [name for name in self._tensors if name not in weight_map]
        if unlisted:
            raise ModelError(
                f"{index_path}: {len(unlisted)} tensor(s) stored in the shards are not in the index, e.g. "
                f"{unlisted[:5]}; fix or regenerate the index")
        self._tensors = {name: self._tensors[name] for name in weight_map}

    def _open_files(self, files: list[Path]) -> None:
        for file in files:
            if file.suffix == ".safetensors":
                entries = self._open_safetensors(file)
            else:
                entries = self._open_pickle(file)
            for name, stored in entries:
                if name in self._tensors:
                    raise ModelError(
                        f"{self.path}: tensor {name!r} is stored twice, in {self._tensors[name].file.name} and "
                        f"{file.name}; remove the stray file or add a {INDEX_FILE} naming the shards to use")
                self._tensors[name] = stored

    def _open_safetensors(self, file: Path) -> list[tuple[str, _StoredTensor]]:
        """Parse the header (8-byte little-endian length, JSON); keep an unbuffered handle for reads."""
        handle = open(file, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._handles[file] = handle
        try:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{file}: not a readable safetensors file ({exc})") from None
        metadata = header.pop("__metadata__", None) or {}
        if not self._metadata:
            self._metadata = {str(k): str(v) for k, v in metadata.items()}
        data_start, size = 8 + length, file.stat().st_size
        entries = []
        for name, info in sorted(header.items(), key=lambda item: item[1].get("data_offsets", [0])[0]):
            try:
                begin, end = (int(v) for v in info["data_offsets"])
                code, shape = str(info["dtype"]), tuple(int(d) for d in info["shape"])
            except (KeyError, TypeError, ValueError):
                raise ModelError(f"{file}: malformed header entry for {name!r}: {info!r}") from None
            if data_start + end > size or begin > end:
                raise ModelError(f"{file}: tensor {name!r} lies outside the file (truncated download?)")
            dtype = _DTYPE_BY_CODE.get(code)
            if dtype is not None and tensor_nbytes(shape, dtype) != end - begin:
                raise ModelError(f"{file}: tensor {name!r} has {end - begin} bytes, but {code}{list(shape)} needs "
                                 f"{tensor_nbytes(shape, dtype)}")
            entries.append((name, _StoredTensor(file, shape, dtype, code, data_start + begin, end - begin)))
        return entries

    def _open_pickle(self, file: Path) -> list[tuple[str, _StoredTensor]]:
        if not self.allow_pickle:
            raise ModelError(
                f"{file} is a pickled PyTorch checkpoint; loading a pickle can execute arbitrary code, so adaptlab "
                "refuses it by default. Convert the model to safetensors (save_pretrained(..., "
                "safe_serialization=True)), or set 'allow_pickle: true' to load it with "
                "torch.load(weights_only=True, mmap=True), which only accepts tensors.")
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
            raise ModelError(f"{file}: cannot load as a tensors-only checkpoint ({exc})") from exc
        if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise ModelError(f"{file}: expected a flat state dict of name -> tensor, got {type(state).__name__}")
        self._pickled[file] = state
        return [(name, _StoredTensor(file, tuple(t.shape), t.dtype, str(t.dtype))) for name, t in state.items()]

    # -- queries ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def _stored(self, name: str) -> _StoredTensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise ModelError(f"model {self.path} has no tensor {name!r}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self._stored(name).shape

    def dtype(self, name: str) -> torch.dtype:
        stored = self._stored(name)
        if stored.dtype is None:
            raise ModelError(f"{stored.file}: tensor {name!r} has dtype {stored.dtype_code}, which adaptlab does not "
                             f"support (supported: {', '.join(_DTYPE_BY_CODE)})")
        return stored.dtype

    def nbytes(self, name: str) -> int:
        return tensor_nbytes(self.shape(name), self.dtype(name))

    def file_of(self, name: str) -> Path:
        return self._stored(name).file

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (CPU, stored dtype) into a new buffer: one positioned read of its bytes."""
        stored = self._stored(name)
        if stored.file in self._pickled:
            return self._pickled[stored.file][name]
        return self.read_slice(name, 0, math.prod(stored.shape)).reshape(stored.shape)

    def read_slice(self, name: str, start: int, count: int) -> torch.Tensor:
        """Elements ``start .. start+count`` of the flattened tensor (stored dtype, 1-D), read from disk."""
        stored = self._stored(name)
        dtype = self.dtype(name)
        if stored.file in self._pickled:
            return self._pickled[stored.file][name].reshape(-1)[start:start + count]
        if stored.file not in self._handles:
            raise ValueError(f"ModelTensors({self.path}) is closed")
        buffer = torch.empty(count * dtype.itemsize, dtype=torch.uint8)
        handle = self._handles[stored.file]
        handle.seek(stored.offset + start * dtype.itemsize)
        view, done = memoryview(buffer.numpy()), 0
        while done < len(view):
            read = handle.readinto(view[done:])
            if not read:
                raise ModelError(f"{stored.file}: file ended inside tensor {name!r}")
            done += read
        return buffer.view(dtype)

    def metadata(self) -> dict[str, str]:
        """The first safetensors shard's ``__metadata__`` (e.g. ``{"format": "pt"}``); ``{}`` for pickles."""
        return dict(self._metadata)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._pickled.clear()

    def __enter__(self) -> ModelTensors:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelTensors({str(self.path)!r}, {len(self._tensors)} tensors)"


def _read_weight_map(index_path: Path) -> dict[str, str]:
    def refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ModelError(f"{index_path}: tensor {key!r} appears twice in the index")
            seen[key] = value
        return seen

    try:
        index = json.loads(index_path.read_text(encoding="utf-8"), object_pairs_hook=refuse_duplicates)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{index_path}: cannot read the shard index ({exc})") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise ModelError(f"{index_path}: expected a non-empty 'weight_map' of tensor name -> shard file name")
    return weight_map


# -- writing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.dtype)


def assign_shards(plan: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Split ``plan`` in order into shards of at most ``max_shard_bytes`` (an oversized tensor stands alone)."""
    shards: list[list[PlannedTensor]] = []
    current: list[PlannedTensor] = []
    current_bytes = 0
    for tensor in plan:
        if current and current_bytes + tensor.nbytes > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(tensor)
        current_bytes += tensor.nbytes
    if current:
        shards.append(current)
    return shards


def shard_header(tensors: list[PlannedTensor], metadata: dict[str, str]) -> bytes:
    """The 8-byte length prefix plus the space-padded JSON header of one safetensors file."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for tensor in tensors:
        end = offset + tensor.nbytes
        header[tensor.name] = {"dtype": SAFETENSORS_DTYPE_CODES[tensor.dtype], "shape": list(tensor.shape),
                               "data_offsets": [offset, end]}
        offset = end
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded


class SafetensorsShardWriter:
    """Write planned tensors into safetensors shards, one tensor in memory at a time.

    ``write`` must be called once per planned tensor, in plan order; anything else is a bug and
    raises ValueError. ``close`` checks completeness and file sizes and writes the index;
    ``abort`` (also run by ``__exit__`` on an exception) deletes the files this writer created.
    """

    def __init__(self, out_dir: str | Path, plan: list[tuple[str, tuple[int, ...], torch.dtype]],
                 max_shard_bytes: int, metadata: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        self._plan = [PlannedTensor(name, tuple(int(d) for d in shape), dtype) for name, shape, dtype in plan]
        if not self._plan:
            raise ValueError("nothing to write: the plan is empty")
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        duplicates = sorted(name for name, n in Counter(t.name for t in self._plan).items() if n > 1)
        if duplicates:
            raise ValueError(f"tensor names planned twice: {duplicates[:5]}")
        unsupported = sorted({str(t.dtype) for t in self._plan if t.dtype not in SAFETENSORS_DTYPE_CODES})
        if unsupported:
            raise ValueError(f"dtypes without a safetensors code: {unsupported}")
        extra = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise ValueError("safetensors metadata keys and values must be strings")
        self._metadata = {"format": "pt", **extra}

        self.shards = assign_shards(self._plan, max_shard_bytes)
        count = len(self.shards)
        self.shard_files = [SINGLE_FILE] if count == 1 else [
            f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
        self._headers = [shard_header(shard, self._metadata) for shard in self.shards]
        self._shard_ends = [sum(len(shard) for shard in self.shards[: i + 1]) for i in range(count)]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._created: list[Path] = []
        self._by_name = {t.name: t for t in self._plan}
        self._next = 0  # index into the plan of the next tensor to write
        self._written = 0  # bytes of that tensor written so far
        self._file: IO[bytes] | None = None
        self._closed = False

    @property
    def total_size(self) -> int:
        """Bytes of tensor data over all shards (headers excluded), as in the HF index's ``total_size``."""
        return sum(t.nbytes for t in self._plan)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` as planned tensor ``name`` (must be the next one in the plan)."""
        self.check_shape(name, tensor)
        self.write_chunk(name, tensor.reshape(-1))

    def check_shape(self, name: str, tensor: torch.Tensor) -> None:
        """ValueError unless ``tensor`` has the shape and dtype planned for ``name``."""
        planned = self._by_name.get(name)
        if planned is None:
            raise ValueError(f"write({name!r}): not a planned tensor")
        if tuple(tensor.shape) != planned.shape or tensor.dtype != planned.dtype:
            raise ValueError(f"write({name!r}): got {tuple(tensor.shape)} {tensor.dtype}, "
                             f"planned {planned.shape} {planned.dtype}")

    def write_chunk(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next consecutive elements of planned tensor ``name``; it is complete when all are written."""
        planned = self._expect(name)
        if chunk.dtype != planned.dtype:
            raise ValueError(f"write_chunk({name!r}): got {chunk.dtype}, planned {planned.dtype}")
        raw = chunk.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        if self._written + raw.numel() > planned.nbytes:
            raise ValueError(f"write_chunk({name!r}): {self._written + raw.numel()} bytes, planned {planned.nbytes}")
        if self._file is None:
            self._open_next_shard()
        assert self._file is not None
        self._file.write(raw.numpy().data)  # safetensors is little-endian, as are the hosts torch ships for
        self._written += raw.numel()
        if self._written < planned.nbytes:
            return
        self._next, self._written = self._next + 1, 0
        if self._next in self._shard_ends:  # that was the shard's last tensor
            self._file.close()
            self._file = None

    def _expect(self, name: str) -> PlannedTensor:
        if self._closed:
            raise ValueError(f"write({name!r}) after the writer was closed or aborted")
        if self._next >= len(self._plan):
            raise ValueError(f"write({name!r}): every planned tensor has already been written")
        planned = self._plan[self._next]
        if name != planned.name:
            raise ValueError(f"write({name!r}) out of plan order: expected {planned.name!r} next")
        return planned

    def _open_next_shard(self) -> None:
        shard = len(self._created)
        path = self.out_dir / self.shard_files[shard]
        self._file = open(path, "xb")  # never overwrite; FileExistsError means the caller reused a directory
        self._created.append(path)
        self._file.write(self._headers[shard])

    def close(self) -> None:
        """Check that every planned tensor was written, then write the index (several shards only)."""
        if self._closed:
            return
        if self._next < len(self._plan):
            missing = [t.name for t in self._plan[self._next:]]
            self.abort()
            raise ValueError(f"writer closed with {len(missing)} planned tensor(s) unwritten, e.g. {missing[:5]}; "
                             "partial shards were deleted")
        for path, header, shard in zip(self._created, self._headers, self.shards):
            expected, actual = len(header) + sum(t.nbytes for t in shard), path.stat().st_size
            if actual != expected:
                self.abort()
                raise OSError(f"{path}: {actual} bytes on disk, expected {expected}; partial shards were deleted")
        if len(self.shards) > 1:
            weight_map = {t.name: file for file, shard in zip(self.shard_files, self.shards) for t in shard}
            index_path = self.out_dir / INDEX_FILE
            if index_path.exists():
                self.abort()
                raise FileExistsError(f"{index_path} already exists; write into a fresh directory")
            atomic_write_json(index_path, {"metadata": {"total_size": self.total_size}, "weight_map": weight_map})
        self._closed = True

    def abort(self) -> None:
        """Close the open shard and delete every file this writer created (no-op after a successful close)."""
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        for path in self._created:
            path.unlink(missing_ok=True)
        self._created.clear()

    def __enter__(self) -> SafetensorsShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
