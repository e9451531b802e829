"""``shala_pl.commands.evaluate`` (``shala-pl evaluate``) and shala_pl.evaluation: ChaosNLI's scoring conventions, formats, and failure modes."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from shala_pl.commands import evaluate as tool
from shala_pl.data.example import DataError, VoteExample
from shala_pl.evaluation import (UidMismatchError, chaosnli_order, evaluate_predictions, label_index,
                                 read_predictions)

REPO = Path(__file__).parent.parent
FIXTURES = REPO / "tests" / "fixtures"
NLI = ("entailment", "neutral", "contradiction")


def vote_example(uid: str, votes: tuple, majority: int, labels: tuple = NLI) -> VoteExample:
    return VoteExample(uid=uid, task="nli", fields={"premise": "p", "hypothesis": "h"}, labels=labels, votes=votes,
                       majority=majority)


@pytest.fixture
def run_tool(monkeypatch, capsys):
    """Runs the command's main in-process with ``--json`` on the given examples (None: read --data with the real
    source reader); returns (exit status, parsed stdout, stderr)."""

    def run(examples, *args):
        if examples is not None:
            monkeypatch.setattr(tool, "load_examples", lambda source, path: list(examples))
        status = tool.main([*args, "--json"])
        out, err = capsys.readouterr()
        return status, (json.loads(out) if status == 0 else None), err

    return run


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def write_json(path, document) -> str:
    path.write_text(json.dumps(document))
    return str(path)


# --- three ChaosNLI-style examples worked by hand ----------------------------------------------------------------
#
# h1: 100 votes E/N/C = 100/0/0, majority E. Model [1/2, 1/2, 0], predicted "entailment" (right).
#     m = [3/4, 1/4, 0]. KL(h||m) = ln(4/3); KL(model||m) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
#     JSD = sqrt(1/2 (ln(4/3) + 1/2 ln(4/3))) = sqrt(3/4 ln(4/3)) = 0.4645...
#     KL(h||model) = ln(1 / (1/2)) = ln 2 (the 1e-15 floor on the model's zero changes it by ~1e-15).
# h2: votes 80/20/0, majority E. Model [0.4, 0.4, 0.2], predicted "e" (ChaosNLI's short code; right).
#     m = [0.6, 0.3, 0.1]. KL(h||m) = 0.8 ln(4/3) + 0.2 ln(2/3); KL(model||m) = 0.4 ln(2/3) + 0.4 ln(4/3) + 0.2 ln 2.
#     JSD = sqrt(1/2 (1.2 ln(4/3) + 0.6 ln(2/3) + 0.2 ln 2)).
#     KL(h||model) = 0.8 ln(0.8/0.4) + 0.2 ln(0.2/0.4) = 0.6 ln 2.
# h3: votes 20/30/50, majority C. Model [0.2, 0.3, 0.5] = the humans, so JSD = KL = 0; predicted "neutral", which
#     is not the argmax: ChaosNLI scores the stated predicted_label, so this example is wrong.
# Means over the three: JSD = (JSD_h1 + JSD_h2 + 0) / 3, KL = (ln 2 + 0.6 ln 2 + 0) / 3 = 1.6 ln 2 / 3, accuracy 2/3.

HAND_EXAMPLES = [vote_example("h1", (100, 0, 0), 0), vote_example("h2", (80, 20, 0), 0),
                 vote_example("h3", (20, 30, 50), 2)]
HAND_JSD = (math.sqrt(0.75 * math.log(4 / 3))
            + math.sqrt(0.5 * (1.2 * math.log(4 / 3) + 0.6 * math.log(2 / 3) + 0.2 * math.log(2)))) / 3
HAND_KL = 1.6 * math.log(2) / 3
HAND_ACCURACY = 2 / 3
HAND_JSONL = [
    {"uid": "h1", "probs": [0.5, 0.5, 0.0], "predicted_label": "entailment"},
    {"uid": "h2", "probs": [0.4, 0.4, 0.2], "predicted_label": "e"},
    {"uid": "h3", "probs": [0.2, 0.3, 0.5], "predicted_label": "neutral", "human": [0.2, 0.3, 0.5],
     "samples": ["neutral", "contradiction"]},
]
HAND_CHAOSNLI = {"my-model": {
    "h1": {"uid": "h1", "predicted_probabilities": [0.5, 0.5, 0.0], "predicted_label": "e"},
    # logits: softmax([ln .4, ln .4, ln .2] + 1) = [0.4, 0.4, 0.2]
    "h2": {"uid": "h2", "logits": [math.log(0.4) + 1, math.log(0.4) + 1, math.log(0.2) + 1],
           "predicted_label": "entailment"},
    "h3": {"uid": "h3", "predicted_probabilities": [0.2, 0.3, 0.5], "predicted_label": "n"},
}}


def test_hand_worked_examples_jsonl(tmp_path, run_tool):
    predictions = write_jsonl(tmp_path / "pred.jsonl", HAND_JSONL)
    status, result, _ = run_tool(HAND_EXAMPLES, "--source", "chaosnli_snli", "--data", "unused",
                                 "--predictions", predictions)
    assert status == 0
    assert result["n"] == 3
    assert result["jsd"] == pytest.approx(HAND_JSD, abs=1e-9)
    assert result["kl"] == pytest.approx(HAND_KL, abs=1e-9)
    assert result["accuracy"] == pytest.approx(HAND_ACCURACY, abs=1e-12)
    # F1 on the predicted labels [E, E, N] against the majorities [E, E, C]: F1_E = 1, F1_N = F1_C = 0.
    assert result["f1_macro"] == pytest.approx(1 / 3)
    assert result["f1_micro"] == pytest.approx(2 / 3)
    assert result["nonfinite_predictions"] == 0  # every prediction is a distribution: jsd and kl are numbers


def test_hand_worked_examples_chaosnli_format(tmp_path, run_tool):
    predictions = write_json(tmp_path / "pred.json", HAND_CHAOSNLI)
    status, result, _ = run_tool(HAND_EXAMPLES, "--source", "chaosnli_snli", "--data", "unused",
                                 "--predictions", predictions)
    assert status == 0
    assert result["model"] == "my-model"
    assert (result["jsd"], result["kl"], result["accuracy"]) == pytest.approx((HAND_JSD, HAND_KL, HAND_ACCURACY),
                                                                              abs=1e-9)


def test_predicted_probabilities_win_over_logits(tmp_path):
    document = {"m": {"h1": {"uid": "h1", "predicted_probabilities": [1.0, 0.0, 0.0], "logits": [0.0, 0.0, 9.0],
                             "predicted_label": "e"}}}
    result = evaluate_predictions(HAND_EXAMPLES[:1], read_predictions(write_json(tmp_path / "p.json", document)))
    assert result["jsd"] == pytest.approx(0.0, abs=1e-6)


# --- round trip through the ChaosNLI export ----------------------------------------------------------------------

def random_examples_and_predictions(labels=NLI, n=30, seed=0):
    rng = np.random.default_rng(seed)
    examples, records = [], []
    for i in range(n):
        votes = tuple(int(v) for v in rng.multinomial(100, rng.dirichlet([0.5] * len(labels))))
        examples.append(vote_example(f"u{i}", votes, int(np.argmax(votes)), labels))
        probs = rng.dirichlet([1.0] * len(labels))
        if i % 7 == 0:
            probs[rng.integers(len(labels))] = 0.0
        records.append({"uid": f"u{i}", "probs": probs.tolist(),
                        "predicted_label": labels[int(np.argmax(probs))]})
    return examples, records


@pytest.mark.parametrize("labels", [NLI, ("contradiction", "entailment", "neutral")])
def test_round_trip_through_chaosnli_export(tmp_path, run_tool, labels):
    examples, records = random_examples_and_predictions(labels)
    predictions = write_jsonl(tmp_path / "pred.jsonl", records)
    exported = tmp_path / "export.json"
    common = ["--source", "snli", "--data", "unused", "--bins", "3"]
    status, first, _ = run_tool(examples, *common, "--predictions", predictions, "--export-chaosnli",
                                str(exported), "--model-name", "ours")
    assert status == 0
    status, second, _ = run_tool(examples, *common, "--predictions", str(exported))
    assert status == 0
    assert second == first
    assert first["model"] == "ours"

    document = json.loads(exported.read_text())
    record = document["ours"]["u1"]
    by_name = dict(zip(labels, records[1]["probs"]))
    assert record["predicted_probabilities"] == [by_name[name] for name in NLI]  # always [E, N, C]
    assert record["predicted_label"] == records[1]["predicted_label"]


def test_round_trip_matches_scipy_and_reference_arithmetic(tmp_path):
    examples, records = random_examples_and_predictions(n=40, seed=3)
    result = evaluate_predictions(examples, read_predictions(write_jsonl(tmp_path / "p.jsonl", records)))
    jsd, kl = [], []
    for example, record in zip(examples, records):
        floored = np.where(np.abs(record["probs"]) < 1e-15, 1e-15, record["probs"])
        floored = floored / floored.sum()
        jsd.append(jensenshannon(example.distribution, floored))
        kl.append(scipy_entropy(example.distribution, floored))
    assert result["jsd"] == pytest.approx(np.mean(jsd), abs=1e-9)
    assert result["kl"] == pytest.approx(np.mean(kl), abs=1e-9)


def test_alphanli_labels_export_as_integers(tmp_path, run_tool):
    labels = ("1", "2")
    examples = [vote_example("a", (91, 9), 0, labels), vote_example("b", (50, 50), 1, labels)]
    document = {"bert": {"a": {"uid": "a", "logits": [2.0, 0.0], "predicted_label": 1},
                         "b": {"uid": "b", "logits": [0.0, 1.0], "predicted_label": 2}}}
    exported = tmp_path / "export.json"
    status, result, _ = run_tool(examples, "--source", "chaosnli_alphanli", "--data", "unused", "--predictions",
                                 write_json(tmp_path / "p.json", document), "--export-chaosnli", str(exported))
    assert status == 0 and result["accuracy"] == 1.0
    assert [r["predicted_label"] for r in json.loads(exported.read_text())["bert"].values()] == [1, 2]


# --- uids on one side only ---------------------------------------------------------------------------------------

def test_missing_and_extra_uids_are_an_error(tmp_path, run_tool):
    records = HAND_JSONL[:2] + [{"uid": "stranger", "probs": [1, 0, 0]}]
    status, _, err = run_tool(HAND_EXAMPLES, "--source", "snli", "--data", "unused",
                              "--predictions", write_jsonl(tmp_path / "p.jsonl", records))
    assert status == 2
    assert "1 data uids without a prediction: h3" in err
    assert "1 predicted uids not in the data: stranger" in err


def test_allow_missing_scores_the_intersection(tmp_path, run_tool):
    records = HAND_JSONL[:2] + [{"uid": "stranger", "probs": [1, 0, 0]}]
    status, result, _ = run_tool(HAND_EXAMPLES, "--source", "snli", "--data", "unused", "--allow-missing",
                                 "--predictions", write_jsonl(tmp_path / "p.jsonl", records))
    assert status == 0
    assert (result["n"], result["missing_predictions"], result["extra_predictions"]) == (2, 1, 1)
    intersection = evaluate_predictions(HAND_EXAMPLES[:2],
                                        read_predictions(write_jsonl(tmp_path / "q.jsonl", HAND_JSONL[:2])))
    assert result["jsd"] == intersection["jsd"] and result["accuracy"] == 1.0


def test_no_overlap_at_all_is_an_error_even_with_allow_missing(tmp_path):
    predictions = read_predictions(write_jsonl(tmp_path / "p.jsonl", [{"uid": "x", "probs": [1, 0, 0]}]))
    with pytest.raises(UidMismatchError):
        evaluate_predictions(HAND_EXAMPLES, predictions, allow_missing=True)


# --- bad prediction files: the error names file, line and field ---------------------------------------------------

BAD_JSONL = {
    "not json": ('{"uid": "h1", "probs": [1, 0, 0]}\n{"uid": "h2", probs}\n', ":2:", "malformed JSON"),
    "no uid": ('{"probs": [1, 0, 0]}\n', ":1: field 'uid'", "non-empty string"),
    "no probs": ('{"uid": "h1"}\n', ":1: field 'probs'", "missing"),
    "text in probs": ('{"uid": "h1", "probs": [1, "a", 0]}\n', ":1: field 'probs'", "finite numbers"),
    "negative prob": ('{"uid": "h1", "probs": [1.5, -0.5, 0]}\n', ":1: field 'probs'", "non-negative"),
    # each value finite, the sum not: rescaled, the row would be NaN and used to score JSD 0
    "probs summing past float range": ('{"uid": "h1", "probs": [1e308, 1e308, 0]}\n', ":1: field 'probs'",
                                       "finite sum"),
    "duplicate uid": ('{"uid": "h1", "probs": [1, 0, 0]}\n{"uid": "h1", "probs": [1, 0, 0]}\n', ":2: field 'uid'",
                      "duplicate"),
    "bad label type": ('{"uid": "h1", "probs": [1, 0, 0], "predicted_label": [0]}\n',
                       ":1: field 'predicted_label'", "label name"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_bad_jsonl_is_located(tmp_path, case):
    text, location, message = BAD_JSONL[case]
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as error:
        read_predictions(path)
    assert f"{path}{location}" in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("record,field,message", [
    ({"uid": "h1", "probs": [0.5, 0.5]}, "probs", "2 values for 3 labels"),
    ({"uid": "h1", "probs": [1, 0, 0], "predicted_label": "maybe"}, "predicted_label", "unknown label 'maybe'"),
    ({"uid": "h1", "probs": [1, 0, 0], "human": [0, 0, 1]}, "human", "differs from the data's vote distribution"),
])
def test_predictions_that_do_not_fit_the_data_are_located(tmp_path, record, field, message):
    path = write_jsonl(tmp_path / "p.jsonl", [record])
    with pytest.raises(DataError) as error:
        evaluate_predictions(HAND_EXAMPLES[:1], read_predictions(path))
    assert f"{path}:1: field '{field}'" in str(error.value) and message in str(error.value)


def test_data_with_infinite_votes_is_refused_naming_the_record(tmp_path, run_tool):
    # With an Infinity count the human distribution is NaN and its JSD used to count as 0: the JSD was under-reported
    # and the tool exited 0. The reader now refuses the record.
    fixture = REPO / "tests" / "fixtures" / "chaosnli" / "chaosNLI_snli.jsonl"
    lines = fixture.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    lines[2] = json.dumps({**record, "label_counter": {"e": math.inf, "n": 10}})
    data = tmp_path / "chaosNLI_snli.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    uids = [json.loads(line)["uid"] for line in lines]
    predictions = write_jsonl(tmp_path / "pred.jsonl", [{"uid": uid, "probs": [0.4, 0.3, 0.3]} for uid in uids])
    status, _, err = run_tool(None, "--source", "chaosnli_snli", "--data", str(data), "--predictions", predictions)
    assert status == 2
    assert err == (f"error: {data}:3: field 'label_counter': vote counts must be finite numbers with a finite sum, "
                   "got [inf, 10, 0]\n")


def test_bad_chaosnli_records_are_located(tmp_path):
    document = {"m": {"h1": {"uid": "h1", "predicted_label": "e"}}}
    path = write_json(tmp_path / "p.json", document)
    with pytest.raises(DataError, match=r"field 'm/h1/predicted_probabilities': missing"):
        read_predictions(path)


def test_a_file_with_several_models_needs_a_model_name(tmp_path, run_tool):
    document = {"a": HAND_CHAOSNLI["my-model"], "b": HAND_CHAOSNLI["my-model"]}
    path = write_json(tmp_path / "p.json", document)
    status, _, err = run_tool(HAND_EXAMPLES, "--source", "snli", "--data", "unused", "--predictions", path)
    assert status == 2 and "--model-name" in err and "['a', 'b']" in err
    status, result, _ = run_tool(HAND_EXAMPLES, "--source", "snli", "--data", "unused", "--predictions", path,
                                 "--model-name", "b")
    assert status == 0 and result["model"] == "b"


# --- labels and bins ---------------------------------------------------------------------------------------------

def test_label_conventions():
    assert chaosnli_order(("contradiction", "entailment", "neutral")) == [1, 2, 0]
    assert chaosnli_order(("e", "n", "c")) == [0, 1, 2]
    assert chaosnli_order(("1", "2")) == [0, 1]
    assert label_index("c", NLI) == 2 and label_index("neutral", ("e", "n", "c")) == 1
    assert label_index(2, ("1", "2")) == 1 and label_index("x", NLI) is None


def test_binned_output(tmp_path, run_tool):
    status, result, _ = run_tool(HAND_EXAMPLES, "--source", "snli", "--data", "unused", "--bins", "2",
                                 "--predictions", write_jsonl(tmp_path / "p.jsonl", HAND_JSONL))
    assert status == 0
    # normalised human entropies: h1 0, h2 H(.8,.2)/ln 3 = 0.455, h3 H(.2,.3,.5)/ln 3 = 0.937
    assert result["bin_edges"] == [0.0, 0.5, 1.0]
    assert (result["n_bin0"], result["n_bin1"]) == (2, 1)
    assert result["jsd_bin0"] == pytest.approx(3 * HAND_JSD / 2, abs=1e-9)
    assert result["jsd_bin1"] == pytest.approx(0.0, abs=1e-6)


# --- against ChaosNLI's evaluator, restated from its description, on ChaosNLI-format data -------------------------

CHAOSNLI_CODES = {"e": "e", "n": "n", "c": "c", "entailment": "e", "neutral": "n", "contradiction": "c"}


def chaosnli_reference(data_path: Path, records: dict, nli: bool) -> dict:
    """ChaosNLI's scores computed as its evaluator does: from the data file's own ``label_dist`` and
    ``majority_label``, probabilities floored at 1e-15 (logits softmaxed first), JSD NaN -> 0, accuracy on the
    stated ``predicted_label``."""
    jsd, kl, correct = [], [], []
    for line in data_path.read_text().splitlines():
        item = json.loads(line)
        record = records[item["uid"]]
        if "predicted_probabilities" in record:
            q = np.asarray(record["predicted_probabilities"], dtype=float)
        else:
            q = np.exp(record["logits"]) / np.sum(np.exp(record["logits"]))
        q = np.where(np.abs(q) < 1e-15, 1e-15, q)
        q = q / q.sum()
        value = jensenshannon(item["label_dist"], q)
        jsd.append(0.0 if np.isnan(value) else value)
        kl.append(scipy_entropy(item["label_dist"], q))
        predicted = CHAOSNLI_CODES[record["predicted_label"]] if nli else record["predicted_label"]
        correct.append(predicted == item["majority_label"])
    return {"jsd": np.mean(jsd), "kl": np.mean(kl), "accuracy": np.mean(correct)}


@pytest.mark.parametrize("source,file_name,labels", [
    ("chaosnli_snli", "chaosNLI_snli.jsonl", ("entailment", "neutral", "contradiction")),
    ("chaosnli_alphanli", "chaosNLI_alphanli.jsonl", (1, 2)),
])
def test_matches_chaosnli_evaluator_on_chaosnli_files(tmp_path, run_tool, source, file_name, labels):
    data_path = FIXTURES / "chaosnli" / file_name
    if not data_path.exists():
        pytest.skip(f"fixture {data_path} is not there")
    rng = np.random.default_rng(len(labels))
    records = {}
    for i, line in enumerate(data_path.read_text().splitlines()):
        uid = json.loads(line)["uid"]
        record = {"uid": uid, "predicted_label": labels[int(rng.integers(len(labels)))]}  # not always the argmax
        if i % 2:
            record["logits"] = (4 * rng.standard_normal(len(labels))).tolist()
        else:
            probs = rng.dirichlet([0.7] * len(labels))
            probs[rng.integers(len(labels))] = 0.0 if i % 4 == 0 else probs[0]
            record["predicted_probabilities"] = probs.tolist()
        records[uid] = record
    predictions = write_json(tmp_path / "pred.json", {"candidate": records})
    status, result, err = run_tool(None, "--source", source, "--data", str(data_path), "--predictions", predictions)
    assert status == 0, err
    expected = chaosnli_reference(data_path, records, nli=source != "chaosnli_alphanli")
    assert result["n"] == len(records)
    for name in ("jsd", "kl", "accuracy"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name


# --- end to end on real SNLI votes -------------------------------------------------------------------------------

SNLI_FIXTURE = FIXTURES / "snli_1.0_test_part.jsonl"


def test_snli_end_to_end(tmp_path, run_tool):
    sources = pytest.importorskip("shala_pl.data.sources")
    if not hasattr(sources, "load_source") or not SNLI_FIXTURE.exists():
        pytest.skip("the SNLI reader or its fixture is not there yet")
    examples = sources.load_source("snli", SNLI_FIXTURE).examples
    rng = np.random.default_rng(0)
    records = []
    for example in examples:
        probs = (np.asarray(example.votes, dtype=float) + rng.random()) / (example.total_votes + 3 * rng.random())
        if rng.random() < 0.2:
            probs = np.eye(len(example.labels))[rng.integers(len(example.labels))]
        records.append({"uid": example.uid, "probs": probs.tolist(),
                        "predicted_label": example.labels[int(np.argmax(probs))]})
    predictions = write_jsonl(tmp_path / "pred.jsonl", records)
    exported = tmp_path / "export.json"
    common = ["--source", "snli", "--data", str(SNLI_FIXTURE)]  # the real reader: no examples passed in
    status, result, err = run_tool(None, *common, "--predictions", predictions, "--export-chaosnli", str(exported))
    assert status == 0, err

    jsd, kl, correct = [], [], []
    for example, record in zip(examples, records):
        floored = np.where(np.abs(record["probs"]) < 1e-15, 1e-15, record["probs"])
        floored = floored / floored.sum()
        value = jensenshannon(example.distribution, floored)
        jsd.append(0.0 if np.isnan(value) else value)
        kl.append(scipy_entropy(example.distribution, floored))
        correct.append(int(np.argmax(record["probs"])) == example.majority)
    assert result["n"] == len(examples) > 1000
    assert result["jsd"] == pytest.approx(np.mean(jsd), abs=1e-9)
    assert result["kl"] == pytest.approx(np.mean(kl), abs=1e-9)
    assert result["accuracy"] == pytest.approx(np.mean(correct), abs=1e-12)

    status, again, err = run_tool(None, *common, "--predictions", str(exported))
    assert status == 0, err
    assert again == {**result, "model": "pred"}  # exported under the predictions file's stem


# --- the readable table, several files, agreement metrics ---------------------------------------------------------

def test_scores_say_whether_the_model_tracks_which_pairs_are_contested(tmp_path, run_tool):
    # human entropies: h1 0, h2 H(.8, .2) = 0.500, h3 H(.2, .3, .5) = 1.030; the model's: h1 H(.5, .5) = 0.693,
    # h2 H(.4, .4, .2) = 1.055, h3 1.030 (the humans' own), so the model ranks h2 above the contested h3
    status, result, _ = run_tool(HAND_EXAMPLES, "--source", "snli", "--data", "unused",
                                 "--predictions", write_jsonl(tmp_path / "p.jsonl", HAND_JSONL))
    assert status == 0
    model_h = [math.log(2), -(0.8 * math.log(0.4) + 0.2 * math.log(0.2)), scipy_entropy([0.2, 0.3, 0.5])]
    human_h = [0.0, scipy_entropy([0.8, 0.2]), scipy_entropy([0.2, 0.3, 0.5])]
    assert result["entropy_corr"] == pytest.approx(np.corrcoef(model_h, human_h)[0, 1], abs=1e-9)
    # top third of 3 pairs: h3 alone; its model entropy is above h1's and below h2's -> AUROC 1/2
    assert result["contested_auroc"] == pytest.approx(0.5)


def several_runs(tmp_path) -> list[str]:
    """Two seeds of a method that predicts the humans exactly (JSD 0) or nearly, and one uniform predictor."""
    exact = [{"uid": e.uid, "probs": list(e.distribution)} for e in HAND_EXAMPLES]
    near = [{"uid": e.uid, "probs": [0.9 * p + 0.1 / 3 for p in e.distribution]} for e in HAND_EXAMPLES]
    uniform = [{"uid": e.uid, "probs": [1 / 3] * 3} for e in HAND_EXAMPLES]
    return [f"good={write_jsonl(tmp_path / 'a.jsonl', exact)}", f"good={write_jsonl(tmp_path / 'b.jsonl', near)}",
            write_jsonl(tmp_path / "uniform.jsonl", uniform)]


def test_several_files_give_mean_and_std_per_method(tmp_path, run_tool):
    files = several_runs(tmp_path)
    status, result, _ = run_tool(HAND_EXAMPLES, "--source", "snli", "--data", "unused", "--predictions", *files)
    assert status == 0
    assert list(result["methods"]) == ["good", "uniform"]
    good = result["methods"]["good"]
    assert good["n_runs"] == 2 and good["files"] == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    jsds = [run["jsd"] for run in good["runs"]]
    assert jsds[0] == pytest.approx(0.0, abs=1e-6) and jsds[1] > 0.01
    assert good["mean"]["jsd"] == pytest.approx(np.mean(jsds)) and good["std"]["jsd"] == pytest.approx(
        np.std(jsds, ddof=1))
    uniform = result["methods"]["uniform"]
    assert uniform["n_runs"] == 1 and uniform["std"]["jsd"] == 0.0
    assert uniform["mean"]["entropy_corr"] is None  # a constant prediction: the correlation is undefined


def test_the_default_output_is_a_table_with_the_per_bin_view(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tool, "load_examples", lambda source, path: list(HAND_EXAMPLES))
    assert tool.main(["--source", "snli", "--data", "unused", "--predictions", *several_runs(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "snli: 3 pairs scored; mean ± std over each method's runs"
    assert lines[2].split()[:4] == ["method", "runs", "JSD", "KL"] and "contested AUROC" in lines[2]
    good = next(line for line in lines if line.startswith("good"))
    uniform = next(line for line in lines if line.startswith("uniform"))
    assert good.split()[1] == "2" and "±" in good and "n/a" in uniform  # uniform's entropy_corr is undefined
    assert "JSD by bin of normalised human entropy" in out
    assert any(line.startswith("[0.67, 1.00]") for line in lines)  # the last bin is closed
