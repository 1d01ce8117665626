"""nrc_companion.report.publish (the closing step of every notebook) and report.show / report.glue on figures.

What ``publish`` writes and glues is checked against what the steps it replaces produce when
called one by one: ``verdicts.evaluate``, ``verdicts.sentence``, ``records.record`` and
``records.save_table``.
"""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nrc_companion import report, verdicts  # noqa: E402

NAME = "t6_tcv_propagation"
INPUTS = {"t6.chain": {"values": [0.2]}, "t6.a3@tanh": {"values": [0.5]}, "t6.a3@relu": {"values": [2.0]}}


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Glue calls and displayed objects, with the results written under ``tmp_path``."""
    pytest.importorskip("myst_nb")
    monkeypatch.setenv("NRC_RESULTS_DIR", str(tmp_path))
    out = {"glue": {}, "shown": [], "dir": tmp_path}

    def fake_glue(name, value, display=True):
        out["glue"][name] = (value, display)

    monkeypatch.setattr("myst_nb.glue", fake_glue)
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: out["shown"].append(obj))
    return out


def _md(value) -> str:
    """The text of a glued Markdown object."""
    from IPython.display import Markdown

    assert isinstance(value, Markdown)
    return value.data


def test_publish_default_glues_one_sentence_of_all_checks_records_saves_and_shows(captured):
    values = {"n_cases": 3, "max_ratio": 0.5}
    tables = {"chain": pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}), "a3_sites": pd.DataFrame({"x": ["W1"]})}
    checks = report.publish(NAME, values, inputs=INPUTS, tables=tables)

    expected = verdicts.evaluate(NAME, INPUTS)
    assert checks == expected
    # glued: the verdict sentence (not displayed) and every value of the record
    glue = captured["glue"]
    assert set(glue) == {"t6_verdict", "n_cases", "max_ratio"}
    text, display = glue["t6_verdict"]
    assert _md(text) == " ".join(verdicts.sentence(c) for c in expected) and display is False
    assert glue["n_cases"] == (3, False)
    # the record: values, checks and inputs as records.record writes them
    rec = json.loads((captured["dir"] / f"{NAME}.json").read_text())
    assert rec["notebook"] == NAME and rec["values"] == values
    assert rec["checks"] == json.loads(json.dumps(expected, default=str))
    assert rec["inputs"] == INPUTS
    # the tables, as CSV without index
    for name, df in tables.items():
        pd.testing.assert_frame_equal(pd.read_csv(captured["dir"] / NAME / f"{name}.csv"), df)
    # the verdict cards, last
    assert len(captured["shown"]) == 1
    assert captured["shown"][0]["text/plain"] == "3 checks: pass, differs, pass"


def test_publish_chosen_sentences_texts_and_given_checks(captured):
    checks = verdicts.evaluate(NAME, INPUTS)
    by_id = {c["id"]: c for c in checks}
    out = report.publish(NAME, {"v": 1.0}, checks, inputs=INPUTS,
                         verdict={"t6_chain_verdict": ["t6.chain"], "t6_both": ["t6.a3@relu", "t6.chain"]},
                         texts={"t6_note": "*not run*"})
    assert out == checks
    glue = captured["glue"]
    assert set(glue) == {"t6_chain_verdict", "t6_both", "t6_note", "v"}  # no default "t6_verdict"
    assert _md(glue["t6_chain_verdict"][0]) == verdicts.sentence(by_id["t6.chain"])
    assert _md(glue["t6_both"][0]) == (verdicts.sentence(by_id["t6.a3@relu"]) + " "
                                       + verdicts.sentence(by_id["t6.chain"]))
    assert _md(glue["t6_note"][0]) == "*not run*"
    assert not (captured["dir"] / NAME).exists()  # no tables, no folder


def test_publish_sequence_of_ids_uses_the_default_name_and_empty_mapping_glues_no_sentence(captured):
    report.publish(NAME, {}, inputs=INPUTS, verdict=["t6.chain"])
    assert set(captured["glue"]) == {"t6_verdict"}
    by_id = {c["id"]: c for c in verdicts.evaluate(NAME, INPUTS)}
    assert _md(captured["glue"]["t6_verdict"][0]) == verdicts.sentence(by_id["t6.chain"])
    captured["glue"].clear()
    report.publish(NAME, {}, inputs=INPUTS, verdict={})
    assert captured["glue"] == {}
    with pytest.raises(KeyError):
        report.publish(NAME, {}, inputs=INPUTS, verdict=["t6.no_such_check"])


def test_show_displays_then_closes_and_glue_closes_a_figure(captured):
    fig, ax = plt.subplots()
    assert plt.fignum_exists(fig.number)
    assert report.show(fig) is None
    assert captured["shown"] == [fig] and not plt.fignum_exists(fig.number)

    fig2, _ = plt.subplots()
    assert report.glue("headline", fig2, display=True) is fig2
    assert captured["glue"]["headline"] == (fig2, True) and not plt.fignum_exists(fig2.number)
    # glue of anything else is unchanged
    assert report.glue("text", "abc") == "abc" and captured["glue"]["text"] == ("abc", False)
