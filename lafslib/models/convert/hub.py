"""Published models by name: ``hf://owner/repo[@revision]`` through huggingface_hub's cache.

Files come from the Hugging Face Hub into huggingface_hub's own cache (``HF_HUB_CACHE``,
default ``~/.cache/huggingface/hub``); once there, ``HF_HUB_OFFLINE=1`` reads them with no
network. Only data files are fetched (weights, ``model.json``, ``config.json``,
``pretrained_model/model.yaml``); a repository's code (CVLFace's ``wrapper.py``, ``models/``) is
never downloaded nor run, and weights are read as safetensors where the repository has them
(``torch.load(weights_only=True)`` otherwise).

Two layouts are understood:

- a **lafslib export** (``model.json`` + ``model.safetensors``, maybe ``model.onnx``): used as it
  is;
- a **CVLFace** model (``minchul/cvlface_*``): ``model.safetensors`` with ``model.net.*`` keys
  (or ``pretrained_model/model.pt`` with ``net.*``), ``pretrained_model/model.yaml`` and
  ``config.json``. CVLFace rewrites a BGR ``color_space`` to RGB in ``model.yaml`` (its wrapper
  then flips the channels itself) while ``config.json`` keeps the colour space the weights were
  trained on: ``config.json`` wins, and a disagreement is reported.

The commit a revision resolved to is recorded in ``model.json`` (``converted_from.source`` =
``hf://owner/repo@<commit>``), so a conversion names exactly the files it read.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lafslib.errors import InputNotFoundError
from lafslib.models._registry import list_models
from lafslib.models.convert._common import ConversionError

__all__ = [
    "HubCheckpoint",
    "HubSource",
    "hub_checkpoint",
    "hub_snapshot",
    "is_hf_source",
    "parse_hf_source",
    "resolve_export",
]

PREFIX = "hf://"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Files fetched first: every metadata file and the safetensors weights.
DATA_FILES = [
    "model.json",
    "model.safetensors",
    "model.onnx",
    "model.onnx.data",
    "config.json",
    "pretrained_model/model.yaml",
]
#: The pickled weights, fetched only when the repository has no ``model.safetensors``.
PICKLED_WEIGHTS = "pretrained_model/model.pt"


@dataclass(frozen=True)
class HubSource:
    """``hf://owner/repo[@revision]`` parsed: the repository and the revision asked for."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return PREFIX + self.repo + (f"@{self.revision}" if self.revision else "")

    def at(self, commit: str) -> str:
        """The source pinned to a commit: ``hf://owner/repo@<commit>``."""
        return f"{PREFIX}{self.repo}@{commit}"


def is_hf_source(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a published model (``hf://...``)."""
    return isinstance(source, str) and source.startswith(PREFIX)


def parse_hf_source(source: str) -> HubSource:
    """Parse ``hf://owner/repo[@revision]``.

    Raises:
        InputNotFoundError: not of that form.
    """
    body = source[len(PREFIX) :] if source.startswith(PREFIX) else source
    repo, at, revision = body.partition("@")
    if not _REPO.match(repo) or (at and not revision):
        raise InputNotFoundError(
            f"{source!r} is not a published model name: expected hf://owner/repo or "
            "hf://owner/repo@revision (a branch, tag or commit)"
        )
    return HubSource(repo, revision or None)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cache_hint() -> str:
    from huggingface_hub import constants

    return f"HF_HUB_CACHE={constants.HF_HUB_CACHE}"


def _hub_error(src: HubSource, exc: Exception, what: str) -> Exception:
    """One user error line for a failed download of ``what`` from ``src``."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return InputNotFoundError(
            f"{src}: gated repository; accept its terms and log in (hf auth login)"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return InputNotFoundError(
            f"{src}: no such repository on the Hugging Face Hub (or it is private: log in with "
            "hf auth login)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return InputNotFoundError(f"{src}: no revision {src.revision!r} in {src.repo}")
    if isinstance(exc, LocalEntryNotFoundError):
        if _offline():
            return InputNotFoundError(
                f"{src}: {what} is not in the local Hugging Face cache ({_cache_hint()}) and "
                "HF_HUB_OFFLINE=1 forbids downloading it; run once online or unset HF_HUB_OFFLINE"
            )
        return InputNotFoundError(
            f"{src}: cannot download {what} (no connection to the Hugging Face Hub?) and it is "
            f"not in the local cache ({_cache_hint()})"
        )
    if isinstance(exc, EntryNotFoundError):
        return InputNotFoundError(f"{src}: the repository has no {what}")
    return InputNotFoundError(f"{src}: cannot fetch {what} ({type(exc).__name__}: {exc})")


@dataclass
class HubSnapshot:
    """A repository's files in the local cache, at the commit its revision resolved to."""

    source: HubSource
    folder: Path
    commit: str

    @property
    def pinned(self) -> str:
        """``hf://owner/repo@<commit>``."""
        return self.source.at(self.commit)

    def has(self, name: str) -> bool:
        """Whether the cached snapshot holds ``name``."""
        return (self.folder / name).is_file()

    @property
    def is_export(self) -> bool:
        """Whether the repository is a lafslib export (it has ``model.json``)."""
        return self.has("model.json")


def hub_snapshot(source: str | HubSource) -> HubSnapshot:
    """Fetch (or find in the cache) the data files of a published model.

    Raises:
        InputNotFoundError: unknown repository or revision, or, offline, not cached.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    src = parse_hf_source(source) if isinstance(source, str) else source
    try:
        folder = snapshot_download(
            src.repo, revision=src.revision, allow_patterns=DATA_FILES, repo_type="model"
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise _hub_error(src, exc, "the repository") from None
    folder = Path(folder)
    return HubSnapshot(src, folder, folder.name)


def _fetch(snap: HubSnapshot, name: str, what: str | None = None) -> Path:
    """One more file of the snapshot, at its resolved commit (``what``: how errors name it)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if snap.has(name):
        return snap.folder / name
    try:
        return Path(hf_hub_download(snap.source.repo, name, revision=snap.commit))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise _hub_error(HubSource(snap.source.repo, snap.commit), exc, what or name) from None


@dataclass
class HubCheckpoint:
    """What a CVLFace repository gives the converter: weights and the input convention."""

    snapshot: HubSnapshot
    weights: Path
    format: str = "cvlface"
    bgr: bool = False
    model_name: str | None = None
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The ``model.json`` entry naming the repository, revision, commit and files read."""
        return {
            "repo": self.snapshot.source.repo,
            "revision": self.snapshot.source.revision or "main",
            "commit": self.snapshot.commit,
            "files": self.files,
        }


def _colour(path: Path, keys: tuple[str, ...]) -> str | None:
    """The ``color_space`` of a CVLFace config (YAML or JSON), looked for under ``keys``."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConversionError(f"{path}: not readable as YAML/JSON ({exc})") from None
    for key in keys:
        data = data.get(key, {}) if isinstance(data, dict) else {}
    value = data.get("color_space") if isinstance(data, dict) else None
    return str(value).upper() if value is not None else None


def _cvlface_model_name(yaml_path: Path) -> str | None:
    """The lafslib model of a CVLFace ViT config (``yaml_path`` .../vit[_kprpe]/..., ``name``)."""
    import yaml

    data = yaml.safe_load(yaml_path.read_text()) or {}
    if not isinstance(data, dict):
        return None
    family = str(data.get("yaml_path", ""))
    size = str(data.get("name", ""))
    for part, suffix in (("/vit_kprpe/", "_kprpe"), ("/vit/", "")):
        name = f"cvlface_vit_{size}{suffix}"
        if part in f"/{family}" and name in list_models():
            return name
    return None


def hub_checkpoint(source: str) -> HubCheckpoint:
    """The weights and input convention of a CVLFace model published on the Hub.

    Reads ``model.safetensors`` (``model.net.*``) when the repository has it, else
    ``pretrained_model/model.pt`` (``net.*``); the colour space from ``config.json`` (what the
    weights were trained on), else from ``pretrained_model/model.yaml``; a CVLFace ViT's lafslib
    model from ``model.yaml``.

    Raises:
        InputNotFoundError: repository, revision or a needed file missing (offline: not cached).
        ConversionError: the repository is a lafslib export, or its configs are unreadable.
    """
    snap = hub_snapshot(source)
    if snap.is_export:
        raise ConversionError(
            f"{snap.pinned} is a lafslib export already (model.json): use it as it is, e.g. "
            f"lafs eval --model {snap.source}"
        )
    if snap.has("model.safetensors"):
        weights, files = snap.folder / "model.safetensors", ["model.safetensors"]
    else:
        weights = _fetch(snap, PICKLED_WEIGHTS, f"model.safetensors or {PICKLED_WEIGHTS}")
        files = [PICKLED_WEIGHTS]
    hub = HubCheckpoint(snap, weights, files=files)
    from_json = _colour(snap.folder / "config.json", ("conf",)) if snap.has("config.json") else None
    if from_json is None and snap.has("config.json"):
        from_json = _colour(snap.folder / "config.json", ())
    yaml_file = snap.folder / "pretrained_model" / "model.yaml"
    from_yaml = _colour(yaml_file, ()) if yaml_file.is_file() else None
    hub.files += [f for f in ("config.json", "pretrained_model/model.yaml") if snap.has(f)]
    chosen = from_json or from_yaml or "RGB"
    if from_json and from_yaml and from_json != from_yaml:
        note = (
            f"{snap.pinned}: config.json says {from_json} but pretrained_model/model.yaml says "
            f"{from_yaml}; using {from_json} (config.json keeps the colour space the weights were "
            "trained on; CVLFace rewrites BGR to RGB in model.yaml and flips inside its wrapper)"
        )
        hub.notes.append(note)
        warnings.warn(note, stacklevel=2)
    if chosen not in ("RGB", "BGR"):
        raise ConversionError(f"{snap.pinned}: unknown color_space {chosen!r} (RGB or BGR)")
    hub.bgr = chosen == "BGR"
    if yaml_file.is_file():
        hub.model_name = _cvlface_model_name(yaml_file)
    return hub


def lafs_cache() -> Path:
    """Where converted published models are kept: ``$LAFS_CACHE`` or ``~/.cache/lafslib``."""
    root = os.environ.get("LAFS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lafslib"
    )
    return Path(root)


def resolve_export(source: str) -> Path:
    """A local export folder for ``hf://owner/repo[@revision]``.

    A lafslib export is its cached snapshot; a CVLFace model is converted once into
    ``$LAFS_CACHE/hf/<owner>--<repo>/<commit>`` (``model.json`` names the pinned source) and
    read from there afterwards, offline too.
    """
    snap = hub_snapshot(source)
    if snap.is_export:
        if not snap.has("model.safetensors"):
            _fetch(snap, "model.safetensors")
        return snap.folder
    out = lafs_cache() / "hf" / snap.source.repo.replace("/", "--") / snap.commit
    if (out / "model.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from lafslib.models.convert.core import convert_to_export

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            convert_to_export(snap.pinned, tmp)
        except ConversionError as exc:
            raise ConversionError(
                f"{exc}; convert it yourself with 'lafs convert {snap.source} EXPORT' and the "
                "options it needs, then use EXPORT"
            ) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another process converted it first
            if not (out / "model.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
