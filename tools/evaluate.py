"""Score predictions against a source's human votes, in ChaosNLI's conventions; prints one JSON object.

    python tools/evaluate.py --source snli --data PATH --predictions PRED [--bins N] [--allow-missing]
        [--export-chaosnli OUT] [--model-name NAME]

PRED is our JSONL (uid, probs, predicted_label, ...) or ChaosNLI's {model: {uid: {...}}} JSON. Exit status 2 for
a bad or unreadable prediction or data file, or for uids present on one side only (unless --allow-missing).
"""

import argparse
import json
import sys
from pathlib import Path

def load_examples(source: str, path: Path) -> list:
    from shala_pl.data.sources import load_source

    return load_source(source, path).examples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="source name, as for load_source (e.g. snli)")
    parser.add_argument("--data", required=True, type=Path, help="the source's data file")
    parser.add_argument("--predictions", required=True, type=Path)
    parser.add_argument("--bins", type=int, help="also report JSD in N equal-width bins of normalised human entropy")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score the uids both sides have instead of failing on a mismatch")
    parser.add_argument("--export-chaosnli", type=Path, metavar="OUT",
                        help="also write the scored predictions in ChaosNLI's prediction format")
    parser.add_argument("--model-name", help="the model to read from a ChaosNLI file holding several; the name "
                                             "to export under (default: the predictions file's stem)")
    args = parser.parse_args(argv)
    if args.bins is not None and args.bins < 1:
        parser.error(f"--bins must be at least 1, got {args.bins}")
    # after parsing: --help and argument errors answer without importing torchmetrics (seconds)
    from shala_pl.evaluation import evaluate_predictions, export_chaosnli, match_uids, read_predictions

    try:
        examples = load_examples(args.source, args.data)
        predictions = read_predictions(args.predictions, args.model_name)
        result = {"source": args.source, "model": args.model_name or predictions.model_name,
                  **evaluate_predictions(examples, predictions, args.bins, args.allow_missing)}
        if args.export_chaosnli:
            matched, _, _ = match_uids(examples, predictions, args.allow_missing)
            model_name = args.model_name or predictions.model_name or args.predictions.stem
            export_chaosnli(args.export_chaosnli, matched, predictions, model_name)
    except (ValueError, OSError) as error:  # DataError and UidMismatchError included: bad input, not a bug
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
