"""Decision thresholds: a number, or the threshold an evaluation report measured at a FAR.

``lafs eval`` records, per verification set, the cosine similarity at which the false accept
rate over all pairs is 1e-2, 1e-3 and 1e-4
(:func:`~lafslib.evaluation.verification.thresholds_at_far`), together with the identity of
the model it evaluated. A threshold is given as:

- a number: the cosine similarity itself, e.g. ``0.35``;
- ``REPORT.json@1e-3``: the threshold at FAR 1e-3 of the report's largest set;
- ``REPORT.json@SET@1e-3``: the threshold of the set named ``SET`` (``lfw``, ``cfp_fp``, ...).

A report of another model (other weights, or another embedding feature), of whitened
embeddings, or one that records no model is refused: its thresholds do not apply.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lafslib.errors import InputNotFoundError, LafsUserError

__all__ = ["Threshold", "ThresholdError", "load_threshold"]


class ThresholdError(LafsUserError, ValueError):
    """A threshold that cannot be used: malformed, absent from its report, or of another model."""


@dataclass(frozen=True)
class Threshold:
    """A decision threshold on cosine similarity: same person when ``similarity >= value``.

    Attributes:
        value: the threshold.
        far: the FAR it was measured at (None for a given number).
        set_name: the verification set it was measured on.
        report: the report file it comes from (None for a given number).
        flip: whether that report's embeddings used the flip test.
        tar: the true accept rate it gave there.
    """

    value: float
    far: float | None = None
    set_name: str | None = None
    report: str | None = None
    flip: bool | None = None
    tar: float | None = None

    def describe(self) -> str:
        """Where the threshold comes from, in one phrase."""
        if self.report is None:
            return f"{self.value:.4f} (given)"
        tar = "" if self.tar is None else f", TAR {100 * self.tar:.2f}%"
        flip = "" if self.flip is None else f", flip test {'on' if self.flip else 'off'}"
        return (
            f"{self.value:.4f} (similarity at FAR={self.far:g} on {self.set_name}{tar}; "
            f"{self.report}{flip})"
        )


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _split(spec: str) -> tuple[Path, str | None, float]:
    """``REPORT.json[@SET]@FAR`` -> (report path, set or None, far)."""
    head, sep, far_text = spec.rpartition("@")
    far = _number(far_text) if sep else None
    if not sep or far is None or not 0 < far < 1:
        raise ThresholdError(
            f"threshold {spec!r}: give a cosine similarity (e.g. 0.35) or REPORT.json@FAR "
            "(e.g. eval_report/report.json@1e-3, or report.json@lfw@1e-3 for one set)"
        )
    if Path(head).is_file() or "@" not in head:
        return Path(head), None, far
    report, _, set_name = head.rpartition("@")
    return Path(report), set_name, far


def _read_report(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputNotFoundError(f"threshold report not found: {path}")
    try:
        report = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ThresholdError(f"{path}: not a JSON report ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise ThresholdError(f"{path}: not a 'lafs eval' report (no 'results')")
    return report


def _check_model(path: Path, report: dict[str, Any], identity: dict[str, Any] | None) -> None:
    from lafslib.evaluation.identity import describe_identity, same_model

    recorded = report.get("model_id")
    if not isinstance(recorded, dict):
        raise ThresholdError(
            f"{path}: the report records no model identity (written by an older lafslib); "
            f"evaluate again with 'lafs eval --model {report.get('model', 'EXPORT')}'"
        )
    if identity is None:
        raise ThresholdError(
            f"{path}: cannot check that its thresholds belong to this model (a model object, "
            "not an export); give the threshold as a number"
        )
    if not same_model(recorded, identity):
        raise ThresholdError(
            f"{path}: thresholds of another model ({describe_identity(recorded)}, "
            f"{report.get('model', '?')}), not of {describe_identity(identity)}; evaluate this "
            "model with 'lafs eval' and use its report"
        )
    if "whitening" in report:
        raise ThresholdError(
            f"{path}: thresholds of PCA-whitened embeddings (lafs eval --whiten); they do not "
            "apply to plain embeddings"
        )


def load_threshold(
    spec: str | float | Threshold, identity: dict[str, Any] | None = None
) -> Threshold:
    """Resolve a threshold given as a number, a ``REPORT.json@FAR`` string or a Threshold.

    Args:
        spec: see the module docstring.
        identity: the identity of the model that will use it
            (:func:`~lafslib.evaluation.identity.model_identity`); a report of another model is
            refused.

    Raises:
        ThresholdError: malformed, not in the report, or a report of another model.
        InputNotFoundError: the report file does not exist.
    """
    if isinstance(spec, Threshold):
        return spec
    if isinstance(spec, (int, float)) or _number(str(spec)) is not None:
        value = float(spec)
        if not -1.0 <= value <= 1.0:
            raise ThresholdError(f"threshold {spec}: a cosine similarity lies in [-1, 1]")
        return Threshold(value)
    path, set_name, far = _split(str(spec))
    report = _read_report(path)
    _check_model(path, report, identity)
    sets = {k: v for k, v in report["results"].items() if isinstance(v, dict)}
    if not sets:
        raise ThresholdError(f"{path}: the report has no verification set (lafs eval --bin)")
    if set_name is None:
        set_name = max(sets, key=lambda k: sets[k].get("pairs", 0))
    if set_name not in sets:
        raise ThresholdError(f"{path}: no set {set_name!r}; it has {', '.join(sorted(sets))}")
    table = sets[set_name].get("thresholds")
    if not isinstance(table, dict):
        raise ThresholdError(
            f"{path}: set {set_name!r} records no thresholds (an older report); evaluate again"
        )
    key = f"{far:g}"
    if key not in table:
        raise ThresholdError(
            f"{path}: no threshold at FAR={key} for {set_name}; it has FAR {', '.join(table)}"
        )
    entry = table[key]
    if entry is None:
        raise ThresholdError(
            f"{path}: FAR={key} is not measurable on {set_name} ({sets[set_name].get('pairs')} "
            "pairs: too few different-person pairs); use a larger FAR or a larger set"
        )
    return Threshold(
        value=float(entry["similarity"]),
        far=far,
        set_name=set_name,
        report=os.fspath(path),
        flip=report.get("flip"),
        tar=entry.get("tar"),
    )
