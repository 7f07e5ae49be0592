"""The stage configs and their typed loader; the command line is built from them."""
from __future__ import annotations

import argparse
from dataclasses import fields

import pytest
import yaml

from sleepfm.cli import build_parser
from sleepfm.config import (
    DashboardConfig,
    DemoConfig,
    DiseaseConfig,
    DiseaseEvaluateConfig,
    EmbedConfig,
    EvaluateConfig,
    FinetuneConfig,
    PredictConfig,
    PreprocessConfig,
    PretrainConfig,
    cli_options,
    load_config,
    parse_text,
)
from sleepfm.exceptions import InvalidParameterError

CONFIGS = {"preprocess": PreprocessConfig, "pretrain": PretrainConfig, "embed": EmbedConfig,
           "finetune staging": FinetuneConfig, "finetune events": FinetuneConfig,
           "finetune disease": DiseaseConfig, "evaluate staging": EvaluateConfig,
           "evaluate events": EvaluateConfig, "evaluate disease": DiseaseEvaluateConfig,
           "predict": PredictConfig, "demo": DemoConfig, "dashboard": DashboardConfig}
#: The positional arguments each command needs besides its options.
REQUIRED = {"preprocess": ["in", "--out", "r"], "predict": ["x.edf", "--run", "r", "--out", "o"],
            "dashboard": ["r"]}


def test_sources_and_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("batch_size: 4\nencoder_overrides: {embed_dim: 32}\ndevices: 2\n")
    config = load_config(PretrainConfig, path, max_epochs=3)
    assert (config.batch_size, config.max_epochs, config.devices) == (4, 3, 2)
    assert config.encoder_overrides == {"embed_dim": 32}
    assert load_config(PretrainConfig, config).to_dict() == config.to_dict()
    assert load_config(PretrainConfig, {"lr": 1}).lr == 1.0  # an int is a number
    assert load_config(EmbedConfig).batch_size == EmbedConfig().batch_size
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(EvaluateConfig, tmp_path / "empty.yaml") == EvaluateConfig()


@pytest.mark.parametrize("cls, values, message", [
    (PretrainConfig, {"batch_size": "big"}, "batch_size must be an integer, got 'big'"),
    (PretrainConfig, {"batch_size": True}, "batch_size must be an integer, got True"),
    (PretrainConfig, {"lr": "fast"}, "lr must be a number, got 'fast'"),
    (PretrainConfig, {"objective_kwargs": [1]}, "objective_kwargs must be a mapping"),
    (PretrainConfig, {"devices": 1.5}, "devices must be an integer or a string"),
    (PretrainConfig, {"max_channels": "x"}, "max_channels must be an integer or null"),
    (EvaluateConfig, {"figures": "yes"}, "figures must be true or false"),
    (EvaluateConfig, {"n_boot": 0}, "n_boot must be at least 1, got 0"),
    (PreprocessConfig, {"dtype": "float64"}, "Allowed values are 'float16', 'float32'"),
    (FinetuneConfig, {"mode": "deep"}, "'mode' parameter"),
    (EmbedConfig, {"tokens": True}, r"unknown settings \['tokens'\]"),
])
def test_wrong_values_are_named(cls, values, message, tmp_path):
    with pytest.raises(InvalidParameterError, match=message):
        load_config(cls, values)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(InvalidParameterError, match="c.yaml: .*" + message):
        load_config(cls, path)


def test_yaml_files_that_are_not_settings(tmp_path):
    with pytest.raises(InvalidParameterError, match="config file not found"):
        load_config(PreprocessConfig, tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(InvalidParameterError, match="bad.yaml: not valid YAML at line"):
        load_config(PreprocessConfig, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(InvalidParameterError, match="expected 'name: value' settings"):
        load_config(PreprocessConfig, tmp_path / "list.yaml")
    with pytest.raises(InvalidParameterError, match="a PreprocessConfig, a dict or a YAML path"):
        load_config(PreprocessConfig, 42)


def test_command_line_text():
    assert parse_text("n", "3", int) == 3 and parse_text("x", "0.5", float) == 0.5
    assert parse_text("d", "auto", int | str) == "auto" and parse_text("d", "4", int | str) == 4
    assert parse_text("c", "none", str | None) is None
    assert parse_text("k", "{temperature: 0.2}", dict) == {"temperature": 0.2}
    with pytest.raises(InvalidParameterError, match="k must be a mapping, got '3'"):
        parse_text("k", "3", dict)


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_setting_is_an_option_of_its_command(command):
    cls = CONFIGS[command]
    parser = build_parser()
    words = command.split()
    command_parser = parser
    for word in words:
        sub = next(a for a in command_parser._actions if isinstance(a, argparse._SubParsersAction))
        command_parser = sub.choices[word]
    options: dict[str, set] = {}
    for action in command_parser._actions:
        options.setdefault(action.dest, set()).update(action.option_strings)
    assert "config" in options
    for opt in cli_options(cls):
        assert opt.dest in options and opt.flag in options[opt.dest], (command, opt.dest)
        assert opt.help, (cls.__name__, opt.dest)
    args = parser.parse_args([*words, *REQUIRED.get(words[0], ["--run", "r"])])
    given = {f.name for f in fields(cls) if hasattr(args, f.name)}
    assert not given, "options not given on the command line must not override --config"
