"""Score a prediction file against a source's human votes, the way ChaosNLI's evaluator does.

Conventions taken from ChaosNLI's evaluator (easonnie/ChaosNLI: ``src/evaluation/tools.py``,
``calculate_divergence_bwt_model_human_simplify``; ``src/scripts/evaluate.py``; the README's prediction format;
``data/prediction_samples/snli_random_baseline.json``):

- Prediction file: ``{model_name: {uid: {"uid", "predicted_probabilities" | "logits", "predicted_label"}}}``.
  When a record has both, ``predicted_probabilities`` wins. Logits go through a softmax (ours subtracts the max
  first; theirs does not, which overflows for large logits but is otherwise equal up to rounding).
- Score vectors are in a fixed label order: [E, N, C] for NLI (entailment, neutral, contradiction) and [1, 2] for
  alphaNLI. We reorder between that and the source's label order.
- Every model distribution is floored: entries with ``|p| < 1e-15`` become 1e-15, then renormalised. Both JSD and
  KL use the floored distribution.
- JSD = mean of ``scipy.spatial.distance.jensenshannon(human, model)`` (natural log; a NaN example counts as 0
  when both sides are distributions, the rounding case; ``nonfinite_predictions`` counts the rows that are not).
  KL = mean of ``scipy.stats.entropy(human, model)`` = KL(human || model).
- Accuracy compares the file's ``predicted_label`` (NLI: "e"/"n"/"c" or the full names) with the data's
  ``majority_label``; the probabilities' argmax is not used. We fall back to the argmax (first index on ties)
  only when a record has no ``predicted_label``. F1 uses the same predicted label.
- Their evaluator ignores predictions for uids outside the data and crashes on data uids without one; we report
  both as an error unless ``allow_missing`` is set, then score the intersection.

Our own format is JSONL, one object per line: ``uid``, ``probs`` (source label order), ``predicted_label``
(optional), ``human`` (optional: checked against the data's vote distribution), ``samples`` (ignored).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from shala_pl.data.sources.records import parse_json_object
from shala_pl.data.example import DataError, VoteExample
from shala_pl.metrics.collection import NONFINITE, build_eval_metrics, compute_flat
from shala_pl.metrics.distribution import floor_model_probs

Label = Union[str, int]

NLI_LABELS = ("entailment", "neutral", "contradiction")  # ChaosNLI's fixed order for NLI score vectors
NLI_CODES = {"e": "entailment", "n": "neutral", "c": "contradiction"}
HUMAN_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Prediction:
    uid: str
    scores: tuple  # probabilities, or logits when ``are_logits``
    are_logits: bool
    chaosnli_order: bool  # scores in ChaosNLI's label order rather than the source's
    predicted_label: Optional[Label]
    human: Optional[tuple]
    path: str
    line: Optional[int]  # JSONL line; None for ChaosNLI's single JSON object
    field_prefix: str  # "" for JSONL; "model/uid/" for ChaosNLI records

    def error(self, field_name: str, message: str) -> DataError:
        return DataError(self.path, self.line, f"{self.field_prefix}{field_name}", message)


@dataclass
class PredictionSet:
    predictions: dict  # uid -> Prediction, in file order
    model_name: Optional[str]  # the ChaosNLI model key; None for our JSONL


class UidMismatchError(ValueError):
    """Data uids without a prediction, or predictions for uids the data does not have."""

    def __init__(self, missing: Sequence[str], extra: Sequence[str], shown: int = 20):
        self.missing, self.extra = list(missing), list(extra)
        parts = []
        for what, uids in (("data uids without a prediction", self.missing),
                           ("predicted uids not in the data", self.extra)):
            if uids:
                more = f" ... and {len(uids) - shown} more" if len(uids) > shown else ""
                parts.append(f"{len(uids)} {what}: {', '.join(uids[:shown])}{more}")
        super().__init__("; ".join(parts) + " (use --allow-missing to score the uids both have)")


# --- reading prediction files ------------------------------------------------------------------------------------

def _number_list(value, path: str, line: Optional[int], field_name: str) -> tuple:
    if not isinstance(value, list) or not value:
        raise DataError(path, line, field_name, f"expected a non-empty list of numbers, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise DataError(path, line, field_name, f"expected finite numbers, got {value}")
    return tuple(float(v) for v in value)


def _probability_list(value, path: str, line: Optional[int], field_name: str) -> tuple:
    probs = _number_list(value, path, line, field_name)
    if any(p < 0 for p in probs) or not 0 < sum(probs) < math.inf:
        raise DataError(path, line, field_name, f"expected non-negative values with a positive, finite sum, "
                                                f"got {list(probs)}")
    return probs


def _label_field(value, path: str, line: Optional[int], field_name: str) -> Optional[Label]:
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return value
    raise DataError(path, line, field_name, f"expected a label name or index, got {value!r}")


def _read_jsonl(path: str, lines: list[str]) -> PredictionSet:
    predictions: dict[str, Prediction] = {}
    for line_number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        record = parse_json_object(path, line_number, text)
        uid = record.get("uid")
        if not isinstance(uid, str) or not uid:
            raise DataError(path, line_number, "uid", f"expected a non-empty string, got {uid!r}")
        if uid in predictions:
            raise DataError(path, line_number, "uid", f"duplicate uid {uid!r} (first at line "
                                                      f"{predictions[uid].line})")
        if "probs" not in record:
            raise DataError(path, line_number, "probs", "missing")
        probs = _probability_list(record["probs"], path, line_number, "probs")
        human = (_number_list(record["human"], path, line_number, "human") if record.get("human") is not None
                 else None)
        predictions[uid] = Prediction(uid, probs, False, False,
                                      _label_field(record.get("predicted_label"), path, line_number,
                                                   "predicted_label"),
                                      human, path, line_number, "")
    if not predictions:
        raise DataError(path, None, None, "no predictions: the file is empty")
    return PredictionSet(predictions, None)


def _is_chaosnli(document) -> bool:
    return isinstance(document, dict) and "uid" not in document and bool(document) and all(
        isinstance(records, dict) for records in document.values())


def _read_chaosnli(path: str, document: dict, model_name: Optional[str]) -> PredictionSet:
    if model_name is None:
        if len(document) != 1:
            raise DataError(path, None, None, f"the file holds {len(document)} models {sorted(document)}: "
                                              f"choose one with --model-name")
        model_name = next(iter(document))
    elif model_name not in document:
        raise DataError(path, None, None, f"no model {model_name!r}; the file holds {sorted(document)}")
    predictions: dict[str, Prediction] = {}
    for uid, record in document[model_name].items():
        prefix = f"{model_name}/{uid}/"
        if not isinstance(record, dict):
            raise DataError(path, None, f"{model_name}/{uid}", f"expected an object, got {record!r}")
        if record.get("uid", uid) != uid:
            raise DataError(path, None, f"{prefix}uid", f"{record['uid']!r} differs from its key {uid!r}")
        if "predicted_probabilities" in record:
            scores = _probability_list(record["predicted_probabilities"], path, None,
                                       f"{prefix}predicted_probabilities")
            are_logits = False
        elif "logits" in record:
            scores, are_logits = _number_list(record["logits"], path, None, f"{prefix}logits"), True
        else:
            raise DataError(path, None, f"{prefix}predicted_probabilities", "missing (and no 'logits' either)")
        label = _label_field(record.get("predicted_label"), path, None, f"{prefix}predicted_label")
        predictions[uid] = Prediction(uid, scores, are_logits, True, label, None, path, None, prefix)
    if not predictions:
        raise DataError(path, None, model_name, "no predictions for this model")
    return PredictionSet(predictions, model_name)


def read_predictions(path: Union[str, Path], model_name: Optional[str] = None) -> PredictionSet:
    """Our JSONL or ChaosNLI's JSON prediction format, told apart by content."""
    path = str(path)
    text = Path(path).read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None  # several lines: JSONL
    if _is_chaosnli(document):
        return _read_chaosnli(path, document, model_name)
    return _read_jsonl(path, text.splitlines())


# --- labels and orders -------------------------------------------------------------------------------------------

def chaosnli_order(labels: Sequence[str]) -> list[int]:
    """Source label index for each position of a ChaosNLI score vector ([E, N, C] for NLI label sets)."""
    names = [NLI_CODES.get(label, label) for label in labels]
    if sorted(names) == sorted(NLI_LABELS):
        return [names.index(name) for name in NLI_LABELS]
    return list(range(len(labels)))


def label_index(value: Label, labels: Sequence[str]) -> Optional[int]:
    """The index of a predicted label given as a name, a ChaosNLI NLI code ("e"/"n"/"c") or a number whose text
    is a label name (alphaNLI's 1 / 2); None if it is none of these."""
    text = str(value)
    if text in labels:
        return list(labels).index(text)
    names = [NLI_CODES.get(label, label) for label in labels]
    full = NLI_CODES.get(text, text)
    return names.index(full) if full in names else None


def chaosnli_label(name: str) -> Label:
    """How ChaosNLI files write a label: NLI labels by full name (as their prediction files do; their evaluator
    accepts those or "e"/"n"/"c"), numeric labels as integers (alphaNLI's ``majority_label`` is 1 or 2)."""
    name = NLI_CODES.get(name, name)
    return int(name) if name.isdigit() else name


# --- scoring -----------------------------------------------------------------------------------------------------

@dataclass
class _Resolved:
    probs: list  # model probabilities in source label order, as given (not yet floored or normalised)
    predicted: int  # predicted label index


def _resolve(prediction: Prediction, example: VoteExample) -> _Resolved:
    labels = example.labels
    field_name = ("logits" if prediction.are_logits else
                  "predicted_probabilities" if prediction.chaosnli_order else "probs")
    if len(prediction.scores) != len(labels):
        raise prediction.error(field_name, f"{len(prediction.scores)} values for {len(labels)} labels "
                                           f"{list(labels)}")
    scores = torch.tensor(prediction.scores, dtype=torch.float64)
    # Unnormalised probabilities stay so: ChaosNLI floors before it normalises (``floor_model_probs``).
    probs = torch.softmax(scores, dim=0) if prediction.are_logits else scores
    if prediction.chaosnli_order:
        source_probs = torch.empty_like(probs)
        source_probs[chaosnli_order(labels)] = probs
        probs = source_probs
    if prediction.predicted_label is None:
        predicted = int(probs.argmax())
    else:
        predicted = label_index(prediction.predicted_label, labels)
        if predicted is None:
            raise prediction.error("predicted_label", f"unknown label {prediction.predicted_label!r}; the "
                                                      f"labels are {list(labels)}")
    if prediction.human is not None:
        if len(prediction.human) != len(labels) or any(
                abs(a - b) > HUMAN_TOLERANCE for a, b in zip(prediction.human, example.distribution)):
            raise prediction.error("human", f"{list(prediction.human)} differs from the data's vote distribution "
                                            f"{list(example.distribution)} (other data, or another label order?)")
    return _Resolved(probs.tolist(), predicted)


def match_uids(examples: Sequence[VoteExample], predictions: PredictionSet,
               allow_missing: bool = False) -> tuple[list[VoteExample], list[str], list[str]]:
    """The examples that have a prediction, plus the missing and extra uids; raises unless ``allow_missing``."""
    by_uid = predictions.predictions
    data_uids = {example.uid for example in examples}
    missing = [example.uid for example in examples if example.uid not in by_uid]
    extra = [uid for uid in by_uid if uid not in data_uids]
    if (missing or extra) and not allow_missing:
        raise UidMismatchError(missing, extra)
    matched = [example for example in examples if example.uid in by_uid]
    if not matched:
        raise UidMismatchError(missing, extra)
    return matched, missing, extra


def _json_number(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


def evaluate_predictions(examples: Sequence[VoteExample], predictions: PredictionSet, bins: Optional[int] = None,
                         allow_missing: bool = False) -> dict:
    """Scores as a JSON-ready dict: jsd, kl, accuracy, f1_*, entropy_*, nonfinite_predictions, n, the uid mismatch
    counts, and with
    ``bins`` the per-bin JSD (``jsd_bin{i}``, null when empty), counts (``n_bin{i}``) and ``bin_edges``."""
    matched, missing, extra = match_uids(examples, predictions, allow_missing)
    labels = matched[0].labels
    for example in matched:
        if example.labels != labels:
            raise ValueError(f"examples have different label sets: {list(labels)} and {list(example.labels)} "
                             f"(uid {example.uid!r})")
    resolved = [_resolve(predictions.predictions[example.uid], example) for example in matched]
    multilabel = all(example.multilabel_target is not None for example in matched)

    metrics = build_eval_metrics(len(labels), multilabel=multilabel, entropy_bins=bins or 0)
    metrics.update(
        probs=floor_model_probs(torch.tensor([r.probs for r in resolved], dtype=torch.float64)),
        human=torch.tensor([example.distribution for example in matched], dtype=torch.float64),
        majority=torch.tensor([example.majority for example in matched], dtype=torch.long),
        predicted=torch.tensor([r.predicted for r in resolved], dtype=torch.long),
        multilabel_target=(torch.tensor([example.multilabel_target for example in matched]) if multilabel
                           else None),
    )
    scores = compute_flat(metrics)
    result: dict = {"n": len(matched), "missing_predictions": len(missing), "extra_predictions": len(extra)}
    for name, value in scores.items():
        result[name] = int(value) if name.startswith("n_bin") or name == NONFINITE else _json_number(value)
    if bins:
        result["bin_edges"] = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64).tolist()
    return result


# --- export ------------------------------------------------------------------------------------------------------

def chaosnli_document(examples: Sequence[VoteExample], predictions: PredictionSet, model_name: str) -> dict:
    """The predictions for ``examples`` in ChaosNLI's format, score vectors in ChaosNLI's label order.

    Probabilities are written as given (logits after the softmax); ChaosNLI's evaluator applies its own floor.
    """
    records = {}
    for example in examples:
        resolved = _resolve(predictions.predictions[example.uid], example)
        order = chaosnli_order(example.labels)
        records[example.uid] = {
            "uid": example.uid,
            "predicted_probabilities": [resolved.probs[i] for i in order],
            "predicted_label": chaosnli_label(example.labels[resolved.predicted]),
        }
    return {model_name: records}


def export_chaosnli(path: Union[str, Path], examples: Sequence[VoteExample], predictions: PredictionSet,
                    model_name: str) -> None:
    Path(path).write_text(json.dumps(chaosnli_document(examples, predictions, model_name)) + "\n",
                          encoding="utf-8")


# --- several runs ------------------------------------------------------------------------------------------------

def mean_and_std(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (n - 1) of the defined values; std 0 for one value, (None, None) for
    none (e.g. a correlation undefined for every run)."""
    defined = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not defined:
        return None, None
    mean = sum(defined) / len(defined)
    if len(defined) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in defined) / (len(defined) - 1))


def summarise_runs(runs: Sequence[dict]) -> dict:
    """Several scored runs of one method (e.g. seeds) -> ``{"n_runs", "mean": {metric: ...}, "std": {...}}`` over
    the numeric metrics of ``evaluate_predictions``; a metric a run could not define (None) is left out of its
    mean."""
    names = [name for name, value in runs[0].items()
             if name not in ("n", "missing_predictions", "extra_predictions", "bin_edges")
             and (value is None or isinstance(value, (int, float))) and not isinstance(value, bool)]
    mean, std = {}, {}
    for name in names:
        mean[name], std[name] = mean_and_std([run.get(name) for run in runs])
    return {"n_runs": len(runs), "n": runs[0]["n"], "mean": mean, "std": std}
