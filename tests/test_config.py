"""Config loading: defaults, overrides, and errors that name the key."""

import pytest

import tfpipe
from tfpipe import config as config_lib

MLP = "configs/digits_mlp.yaml"


@pytest.fixture(autouse=True)
def _at_root(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_seed_config_matches_the_seed_article():
    cfg = tfpipe.load_config(MLP)
    assert cfg.model.name == "mlp"
    assert cfg.model.params == {"hidden_units": [64, 32], "dropout": 0.5}
    assert (cfg.optimizer.name, cfg.optimizer.learning_rate) == ("adam", 0.001)
    assert (cfg.train.batch_size, cfg.train.epochs) == (32, 50)
    assert cfg.model.loss == "categorical_crossentropy"


def test_override_parses_yaml_values():
    cfg = tfpipe.load_config(MLP, overrides=["train.epochs=5", "data.cache=", "model.params.dropout=0.25"])
    assert cfg.train.epochs == 5
    assert cfg.data.cache == ""
    assert cfg.model.params["dropout"] == 0.25


def test_unknown_override_key_names_the_closest_valid_key():
    with pytest.raises(tfpipe.ConfigError, match=r"unknown key 'train.epochz'.*'train.epochs'"):
        tfpipe.load_config(MLP, overrides=["train.epochz=3"])


def test_unknown_yaml_key_names_file_and_closest_key(tmp_path):
    path = write(tmp_path, "train:\n  batch_sise: 32\n")
    with pytest.raises(tfpipe.ConfigError, match=r"c\.yaml: unknown key 'train.batch_sise'.*'train.batch_size'"):
        tfpipe.load_config(path)


def test_string_where_a_number_belongs(tmp_path):
    path = write(tmp_path, "optimizer:\n  learning_rate: fast\n")
    with pytest.raises(tfpipe.ConfigError, match=r"optimizer.learning_rate: expected a number, got str 'fast'"):
        tfpipe.load_config(path)


def test_float_where_an_integer_belongs():
    with pytest.raises(tfpipe.ConfigError, match=r"train.epochs: expected an integer, got float 2.5"):
        tfpipe.load_config(MLP, overrides=["train.epochs=2.5"])


def test_out_of_range_and_bad_choice():
    with pytest.raises(tfpipe.ConfigError, match=r"train.batch_size: expected a value >= 1, got 0"):
        tfpipe.load_config(MLP, overrides=["train.batch_size=0"])
    with pytest.raises(tfpipe.ConfigError, match=r"runtime.strategy: expected one of .*got 'mirored'.*'mirrored'"):
        tfpipe.load_config(MLP, overrides=["runtime.strategy=mirored"])


def test_yaml_off_is_a_string_not_false():
    cfg = tfpipe.load_config(MLP, overrides=["data.cache=off"])
    assert cfg.data.cache == "off"


def test_unknown_model_param_and_preprocess_op_are_named():
    with pytest.raises(tfpipe.ConfigError, match=r"model.params \(mlp\).*hidden_unitz"):
        tfpipe.load_config(MLP, overrides=["model.params.hidden_unitz=[8]"])
    with pytest.raises(tfpipe.ConfigError, match=r"data.map.steps\[0\].op: expected one of .*got 'rescal'"):
        tfpipe.load_config(MLP, overrides=["data.map.steps=[{op: rescal}]"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(tfpipe.ConfigError, match="no such config file"):
        tfpipe.load_config(tmp_path / "nope.yaml")
    with pytest.raises(tfpipe.ConfigError, match="expected a mapping at the top level"):
        tfpipe.load_config(write(tmp_path, "- 1\n- 2\n"))


def test_dump_then_load_gives_the_same_tree(tmp_path):
    cfg = tfpipe.load_config(MLP, overrides=["train.epochs=7", "runtime.strategy=mirrored"])
    config_lib.dump(cfg, tmp_path / "config.yaml")
    assert tfpipe.load_config(tmp_path / "config.yaml") == cfg


def test_every_shipped_config_loads_and_opens_with_its_command_and_result():
    for name, path in config_lib.shipped().items():
        text = open(path, encoding="utf-8").read()
        header = text[: text.index("\n", text.index("Expect:"))] if "Expect:" in text else ""
        assert header.startswith("#") and f"scripts/train.py --config configs/{name}.yaml" in header, name
        tfpipe.load_config(path)
