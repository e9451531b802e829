"""Summary statistics of a vote-data source, as one JSON object.

    shala-pl data-stats snli tests/fixtures/snli_1.0_test_part.jsonl
    shala-pl data-stats goemotions data/goemotions --taxonomy ekman --on-invalid skip
    shala-pl data-stats synthetic --option n_examples=500 --option seed=3

``--option key=value`` passes a source option; the value is read as JSON when it parses (``true``, ``3``,
``["Train"]``), else as a plain string. Bad data or options: the message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from shala_pl.data.sources import SOURCE_NAMES, load_source, source_options
from shala_pl.data.stats import data_stats


def parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv=None) -> int:
    options = "\n".join(f"  {name:<18} {', '.join(f'{k}={v!r}' for k, v in source_options(name).items()) or '-'}"
                        for name in SOURCE_NAMES)
    parser = argparse.ArgumentParser(prog="shala-pl data-stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"each source's options (--option, or data.source_options in a config), "
                                            f"with their defaults:\n{options}")
    parser.add_argument("source", choices=SOURCE_NAMES)
    parser.add_argument("path", nargs="?", help="file or folder to read (not needed for synthetic)")
    parser.add_argument("--taxonomy", choices=["full", "ekman", "sentiment"], help="GoEmotions label set")
    parser.add_argument("--on-invalid", choices=["error", "skip"], default="error")
    parser.add_argument("--option", type=parse_option, action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    options = dict(args.option)
    if args.taxonomy:
        options["taxonomy"] = args.taxonomy
    try:
        result = load_source(args.source, args.path, on_invalid=args.on_invalid, **options)
    except (ValueError, TypeError, OSError) as error:  # DataError is a ValueError
        print(f"shala-pl data-stats: {error}", file=sys.stderr)
        return 2
    print(json.dumps(data_stats(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
