"""The one kind of example every source becomes: annotator votes over ordered labels."""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, get_args

from shala_pl import checks
from shala_pl.errors import ShalaError

OnInvalid = Literal["error", "skip"]


class DataError(ShalaError, ValueError):
    """A bad record, located precisely: ``file:line: field 'name': message``."""

    def __init__(self, path, line: Optional[int], field_name: Optional[str], message: str, reason: str = "invalid"):
        self.path, self.line, self.field, self.reason = str(path), line, field_name, reason
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field_name}':" if field_name else ""
        super().__init__(f"{where}:{what} {message}")


@dataclass(frozen=True)
class VoteExample:
    uid: str
    task: str  # prompt template: "nli", "abductive_nli", "emotion_reddit", "emotion_podcast", "generic"
    fields: dict  # the text fields the prompt needs, e.g. {"premise": ..., "hypothesis": ...}
    labels: tuple  # ordered label names
    votes: tuple  # vote count per label (floats allowed), same order as `labels`
    majority: int  # index of the majority label as the source defines it
    majority_is_tie: bool = False
    multilabel_target: Optional[tuple] = None  # GoEmotions: 1 for labels chosen by >= 2 raters
    true_distribution: Optional[tuple] = None  # synthetic only: the distribution votes were sampled from

    @property
    def total_votes(self) -> float:
        return float(sum(self.votes))

    @property
    def distribution(self) -> tuple:
        total = self.total_votes
        return tuple(v / total for v in self.votes)

    @property
    def entropy(self) -> float:
        """Entropy of the human distribution in nats."""
        return -sum(q * math.log(q) for q in self.distribution if q > 0)


def majority_index(votes: Sequence[float], preferred: Optional[int] = None) -> tuple[int, bool]:
    """Unique top vote; on a tie the ``preferred`` index if it is among the tied, else the first in label order.

    Returns ``(index, is_tie)``.
    """
    top = max(votes)
    tied = [i for i, v in enumerate(votes) if v == top]
    if len(tied) == 1:
        return tied[0], False
    if preferred is not None and preferred in tied:
        return preferred, True
    return tied[0], True


def check_votes(votes: Sequence[float], path, line, field_name: str = "votes") -> None:
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in votes):
        raise DataError(path, line, field_name, f"votes must be numbers, got {list(votes)}", "non_numeric_votes")
    # JSON reads Infinity and 1e400 as inf, and a 400-digit integer as an int no float can hold (comparisons are
    # exact for both); NaN fails every comparison
    if not all(-sys.float_info.max <= v <= sys.float_info.max for v in votes) or not math.isfinite(
            sum(float(v) for v in votes)):
        shown = [v if isinstance(v, float) or abs(v) < 10**20 else f"<{len(str(abs(v)))}-digit integer>"
                 for v in votes]
        raise DataError(path, line, field_name, f"vote counts must be finite numbers with a finite sum, got {shown}",
                        "nonfinite_votes")
    if any(v < 0 for v in votes):
        raise DataError(path, line, field_name, f"negative vote count in {list(votes)}", "negative_votes")
    if sum(votes) <= 0:
        raise DataError(path, line, field_name, "all vote counts are zero", "zero_votes")


@dataclass
class ReadResult:
    examples: list = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> number of records skipped


class RecordSink:
    """Collects examples; applies the ``on_invalid`` policy to DataErrors and rejects duplicate uids."""

    def __init__(self, path, on_invalid: OnInvalid = "error"):
        checks.one_of("on_invalid", on_invalid, get_args(OnInvalid))
        self.path, self.on_invalid = path, on_invalid
        self.result = ReadResult()
        self._seen: dict[str, int] = {}

    def invalid(self, error: DataError) -> None:
        if self.on_invalid == "error":
            raise error
        self.result.skipped[error.reason] += 1

    def skip(self, reason: str) -> None:
        """A record the source's own rules drop (e.g. GoEmotions' very-unclear rows): counted, never an error."""
        self.result.skipped[reason] += 1

    def add(self, example: VoteExample, line: Optional[int]) -> None:
        if example.uid in self._seen:
            self.invalid(DataError(self.path, line, "uid",
                                   f"duplicate uid {example.uid!r} (first seen at record {self._seen[example.uid]})",
                                   "duplicate_uid"))
            return
        self._seen[example.uid] = line
        self.result.examples.append(example)

    def finish(self) -> ReadResult:
        if not self.result.examples and not self.result.skipped:
            raise DataError(self.path, None, None, "no records: the file is empty", "empty_file")
        return self.result
