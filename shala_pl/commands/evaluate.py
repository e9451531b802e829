"""Score prediction files against a source's human votes, in ChaosNLI's conventions (``shala_pl.evaluation``).

    python -m shala_pl.commands.evaluate --source SOURCE --data PATH --predictions [NAME=]PRED [[NAME=]PRED ...]
        [--bins N] [--json] [--allow-missing] [--export-chaosnli OUT] [--model-name NAME]

PRED is our JSONL (uid, probs, predicted_label, ...) or ChaosNLI's {model: {uid: {...}}} JSON. Several files are
scored at once; files given the same NAME (e.g. one per seed) are one method's runs, shown as mean ± std over
them. Without a NAME a file is named by its ChaosNLI model key or its file stem.

Prints a table per method (JSD, KL, accuracy, F1, and whether the model tracks which pairs are contested:
entropy_corr, label_corr, contested_auroc), then the JSD per bin of normalised human entropy. ``--json`` prints
JSON instead: for one file the scores as one object; for several ``{"source", "methods": {NAME: {"files",
"n_runs", "n", "mean", "std", "runs"}}}``.

Exit status 2 for a bad or unreadable prediction or data file, or for uids present on one side only (unless
--allow-missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

# (key, header, format) of the table's columns
COLUMNS = (("jsd", "JSD", "{:.4f}"), ("kl", "KL", "{:.3f}"), ("accuracy", "acc", "{:.3f}"),
           ("f1_macro", "F1-macro", "{:.3f}"), ("entropy_corr", "H corr", "{:.3f}"),
           ("label_corr", "label corr", "{:.3f}"), ("contested_auroc", "contested AUROC", "{:.3f}"))


def load_examples(source: str, path: Path) -> list:
    from shala_pl.data.sources import load_source

    return load_source(source, path).examples


def named_file(text: str) -> tuple[Optional[str], Path]:
    """``NAME=PATH`` or ``PATH`` (a path that exists as written wins over a split at '=')."""
    name, sep, path = text.partition("=")
    if sep and name and path and not Path(text).exists():
        return name, Path(path)
    return None, Path(text)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shala-pl evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="source name, as for load_source (e.g. snli)")
    parser.add_argument("--data", required=True, type=Path, help="the source's data file")
    parser.add_argument("--predictions", required=True, nargs="+", type=named_file, metavar="[NAME=]PRED",
                        help="one or more prediction files; the same NAME on several files: one method's seeds")
    parser.add_argument("--bins", type=int, default=3,
                        help="bins of normalised human entropy for the per-bin JSD (default 3; 0: none)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score the uids both sides have instead of failing on a mismatch")
    parser.add_argument("--export-chaosnli", type=Path, metavar="OUT",
                        help="also write the scored predictions in ChaosNLI's prediction format (one file only)")
    parser.add_argument("--model-name", help="the model to read from a ChaosNLI file holding several; the name "
                                             "to export under (default: the predictions file's stem)")
    args = parser.parse_args(argv)
    if args.bins < 0:
        parser.error(f"--bins must be 0 or more, got {args.bins}")
    if args.export_chaosnli and len(args.predictions) > 1:
        parser.error("--export-chaosnli takes one prediction file")
    return args


def score_files(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Method name -> the scored runs of its files, in the order given."""
    from shala_pl.evaluation import evaluate_predictions, export_chaosnli, match_uids, read_predictions

    examples = load_examples(args.source, args.data)
    by_method: dict[str, list[dict]] = {}
    for name, path in args.predictions:
        predictions = read_predictions(path, args.model_name)
        model = args.model_name or predictions.model_name
        scores = {"source": args.source, "model": model, "file": str(path),
                  **evaluate_predictions(examples, predictions, args.bins or None, args.allow_missing)}
        by_method.setdefault(name or model or path.stem, []).append(scores)
        if args.export_chaosnli:
            matched, _, _ = match_uids(examples, predictions, args.allow_missing)
            export_chaosnli(args.export_chaosnli, matched, predictions, model or path.stem)
    return by_method


def as_json(by_method: dict[str, list[dict]], source: str) -> dict:
    runs = [run for method_runs in by_method.values() for run in method_runs]
    if len(runs) == 1:
        return {key: value for key, value in runs[0].items() if key != "file"}
    from shala_pl.evaluation import summarise_runs

    return {"source": source, "methods": {
        name: {"files": [run["file"] for run in method_runs], **summarise_runs(method_runs), "runs": method_runs}
        for name, method_runs in by_method.items()}}


def cell(mean: Optional[float], std: Optional[float], fmt: str, several: bool) -> str:
    if mean is None:
        return "n/a"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if several else "")


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(text.ljust(width) if i == 0 else text.rjust(width)
                         for i, (text, width) in enumerate(zip(row, widths)))

    return "\n".join([line(headers), "  ".join("-" * width for width in widths), *map(line, rows)])


def render(by_method: dict[str, list[dict]], source: str) -> str:
    from shala_pl.evaluation import summarise_runs

    summaries = {name: summarise_runs(runs) for name, runs in by_method.items()}
    several = any(summary["n_runs"] > 1 for summary in summaries.values())
    first = next(iter(by_method.values()))[0]
    lines = [f"{source}: {first['n']} pairs scored"
             + (f" ({first['missing_predictions']} without a prediction, {first['extra_predictions']} predictions "
                "for other uids)" if first["missing_predictions"] or first["extra_predictions"] else "")
             + ("; mean ± std over each method's runs" if several else ""), ""]
    headers = ["method", "runs", *[header for _, header, _ in COLUMNS]]
    rows = [[name, str(summary["n_runs"]),
             *[cell(summary["mean"].get(key), summary["std"].get(key), fmt, several) for key, _, fmt in COLUMNS]]
            for name, summary in summaries.items()]
    lines.append(render_table(headers, rows))
    edges = first.get("bin_edges")
    if edges:
        lines += ["", "JSD by bin of normalised human entropy H/log K (ChaosNLI's per-entropy-bin view):", ""]
        bin_rows = []
        for b in range(len(edges) - 1):
            closing = "]" if b == len(edges) - 2 else ")"
            bin_rows.append([f"[{edges[b]:.2f}, {edges[b + 1]:.2f}{closing}", str(first[f"n_bin{b}"]),
                             *[cell(summary["mean"].get(f"jsd_bin{b}"), summary["std"].get(f"jsd_bin{b}"),
                                    "{:.4f}", several) for summary in summaries.values()]])
        lines.append(render_table(["H/log K", "n", *summaries], bin_rows))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    # after parsing: --help and argument errors answer without importing torchmetrics (seconds)
    try:
        by_method = score_files(args)
    except (ValueError, OSError) as error:  # DataError and UidMismatchError included: bad input, not a bug
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(by_method, args.source)) if args.json else render(by_method, args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
