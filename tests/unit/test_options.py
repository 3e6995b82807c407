"""captionkit.options, the one table of training options: the command line, TrainConfig, the docs table and the
checks all come from it."""
import numpy as np
import pytest

from captionkit import train
from captionkit.options import OPTIONS, RESUMABLE_OPTIONS, Option, TrainConfig, markdown_table, validate_options
from captionkit.runs import ConfigError
from conftest import REPO_ROOT
from training_helpers import run_cli


def test_every_option_is_declared_once_and_used_everywhere():
    help_text = run_cli("train", "--help").output
    config_fields = set(TrainConfig().to_dict())
    assert config_fields == {o.name for o in OPTIONS}
    for option in OPTIONS:
        assert option.flag in help_text
        assert getattr(TrainConfig(), option.name) == option.default
    assert RESUMABLE_OPTIONS == {o.name for o in OPTIONS if o.resumable}
    docs = (REPO_ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, "docs/training.md's options table is not the one captionkit.options makes"
    # A bad value is refused with the same words on the command line, in a config file and in train().
    from captionkit.runs import ConfigError

    with pytest.raises(ConfigError, match="option 'patience' is 0, expected an integer >= 1 or null"):
        train(patience=0, progress=False)


# ---------------------------------------------------------------------------------------------- each kind's check
def option(kind, **fields):
    return Option(name="x", kind=kind, default=None, help="", **fields)


@pytest.mark.parametrize("kind, fields, good, bad", [
    ("int", {"minimum": 1, "maximum": 3}, [(1, 1), (np.int64(3), 3)], [0, 4, True, 2.0, "2"]),
    ("float", {}, [(0.5, 0.5), (3, 3.0)], [0, -1.0, float("nan"), float("inf"), "fast", True]),
    ("bool", {}, [(True, True), (np.bool_(False), False)], [1, "yes", None]),
    ("choice", {"choices": ("rnn", "lstm")}, [("lstm", "lstm")], ["gru", None]),
    ("text", {}, [("a", "a")], ["", 3]),
])
def test_each_kind_normalises_good_values_and_refuses_the_rest(kind, fields, good, bad):
    checked = option(kind, **fields)
    for value, expected in good:
        result = checked.check(value)
        assert result == expected and type(result) is type(expected)
    for value in bad:
        with pytest.raises(ValueError):
            checked.check(value)


def test_paths_are_made_absolute_and_optional_options_take_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert option("path").check("data/bundle") == str(tmp_path / "data" / "bundle")
    assert option("int", minimum=1, optional=True).check(None) is None
    with pytest.raises(ValueError, match=r"^a path$"):
        option("path").check(None)


def test_validation_names_the_source_the_option_and_the_value():
    assert validate_options({"epochs": 3, "lr": 0.1}) == {"epochs": 3, "lr": 0.1}
    with pytest.raises(ConfigError, match=r"^run.toml: option 'epochs' is 0, expected an integer >= 1$"):
        validate_options({"epochs": 0}, "run.toml")
    with pytest.raises(ConfigError, match=r"^options: unknown option 'hiden_dim'; did you mean 'hidden_dim'\?$"):
        validate_options({"hiden_dim": 3})
    with pytest.raises(ConfigError, match=r"^options: unknown option 'zzz'; known options: "):
        validate_options({"zzz": 3})
    config = TrainConfig.from_mapping({"epochs": 4})
    assert config.epochs == 4 and config.to_dict()["lr"] == TrainConfig().lr


def test_the_docs_table_has_a_row_per_option():
    rows = markdown_table().splitlines()
    assert rows[:2] == ["| option | default | on resume | meaning |", "|---|---|---|---|"]
    assert len(rows) == 2 + len(OPTIONS)
    for row, declared in zip(rows[2:], OPTIONS):
        assert row.startswith(f"| `{declared.flag}") and row.endswith(f"| {declared.help} |")
        assert ("may change" in row) == declared.resumable
