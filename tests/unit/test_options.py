"""captionkit.options, the one table of training options: the command line, TrainConfig, the docs table and the
checks all come from it."""
import pytest

from captionkit import train
from captionkit.options import OPTIONS, RESUMABLE_OPTIONS, TrainConfig, markdown_table
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
