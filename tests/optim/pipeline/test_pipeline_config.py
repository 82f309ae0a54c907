"""Pipeline configuration: the shipped default is valid, every bad input is rejected with its
key and reason before anything runs."""
import re

import pytest

from optim.pipeline.config import (OPTIONS, RUN_OPTIONS, STAGES, ConfigError, default_config_text,
                                   load_config, parse_config, tomllib, validate)


def _config(*stages, run=None):
    raw = {"stage": [{"type": "baseline"}, *stages]}
    if run is not None:
        raw["run"] = run
    return raw


def test_default_config_is_valid_and_complete():
    config, text = load_config()
    assert text == default_config_text()
    types = [s["type"] for s in config["stages"]]
    assert types[0] == "baseline"
    for needed in ("prune", "shrink", "distill", "quantize", "graph", "export"):
        assert needed in types
    for stage in config["stages"]:
        # every option with a default is filled in
        for key, option in OPTIONS[stage["type"]].items():
            if option.default is not None:
                assert key in stage
    assert config["run"]["dataset"] == "mnist-5k" and config["run"]["model"] == "lenet5"


def test_defaults_fill_and_names_default_to_types():
    config = validate(_config({"type": "prune"}, {"type": "quantize", "weight_bits": 4}))
    prune, quantize = config["stages"][1:]
    assert prune["name"] == "prune" and prune["criterion"] == "magnitude"
    assert prune["amounts"] == OPTIONS["prune"]["amounts"].default
    assert quantize["weight_bits"] == 4 and quantize["activation_bits"] == 8
    assert config["run"]["seed"] == RUN_OPTIONS["seed"].default
    channels = validate(_config({"type": "prune", "method": "channels"}))["stages"][1]
    assert channels["criterion"] == "l1"


def test_disabled_stages_are_dropped():
    config = validate(_config({"type": "prune", "enabled": False}, {"type": "graph"}))
    assert [s["type"] for s in config["stages"]] == ["baseline", "graph"]


def test_defaults_are_not_shared_between_configs():
    a = validate(_config({"type": "prune"}))
    a["stages"][1]["amounts"].append(0.99)
    b = validate(_config({"type": "prune"}))
    assert b["stages"][1]["amounts"] == OPTIONS["prune"]["amounts"].default


@pytest.mark.parametrize("raw, key, reason", [
    ({"stages": []}, "stages", "unknown table"),
    ({"stage": []}, "stage", "at least one"),
    (_config({"type": "fold"}), "stage[1].type", "unknown stage type 'fold'"),
    (_config({"name": "x"}), "stage[1].type", "missing"),
    (_config({"type": "prune", "amount": 0.5}), "stage[1].amount", "unknown key"),
    (_config({"type": "prune", "amounts": "0.5"}), "stage[1].amounts", "list of numbers"),
    (_config({"type": "prune", "amounts": [0.5, 0.4]}), "stage[1].amounts", "increase"),
    (_config({"type": "prune", "amounts": [0.5, 1.0]}), "stage[1].amounts", "(0, 1)"),
    (_config({"type": "prune", "criterion": "l1"}), "stage[1].criterion", "method 'weights'"),
    (_config({"type": "prune", "method": "rows"}), "stage[1].method", "one of"),
    (_config({"type": "quantize", "weight_bits": 1}), "stage[1].weight_bits", "[2, 16]"),
    (_config({"type": "quantize", "weight_bits": 4.0}), "stage[1].weight_bits", "an integer"),
    (_config({"type": "quantize", "weight_only": 1}), "stage[1].weight_only", "true or false"),
    (_config({"type": "distill", "T": 0}), "stage[1].T", "[1e-18, 1e+18]"),
    (_config({"type": "distill", "T": 1e19}), "stage[1].T", "[1e-18, 1e+18]"),
    (_config({"type": "distill", "alpha": 1.5}), "stage[1].alpha", "[0, 1]"),
    (_config({"type": "distill", "epochs": True}), "stage[1].epochs", "an integer"),
    (_config({"type": "share", "n_clusters": 1}), "stage[1].n_clusters", ">= 2"),
    (_config({"type": "lowrank", "energy": 0}), "stage[1].energy", "(0, 1]"),
    (_config(run={"dataset": "cifar"}), "run.dataset", "one of"),
    (_config(run={"seed": -1}), "run.seed", ">= 0"),
    (_config(run={"epochs": 3}), "run.epochs", "unknown key"),
    ({"run": 3, "stage": [{"type": "baseline"}]}, "run", "must be a table"),
    ({"stage": [{"type": "prune"}]}, "stage[0].type", "first enabled stage must be 'baseline'"),
    ({"stage": [{"type": "baseline", "enabled": False}, {"type": "graph"}]}, "stage[0].type",
     "must be 'baseline'"),
    (_config({"type": "baseline", "name": "again"}), "stage[1].type", "only one baseline"),
    (_config({"type": "prune"}, {"type": "prune"}), "stage[2].name", "unique"),
    (_config({"type": "prune", "name": "a/b"}), "stage[1].name", "path separators"),
    (_config({"type": "quantize"}, {"type": "prune"}), "stage[2].type", "cannot follow 'quantize'"),
    (_config({"type": "share"}, {"type": "quantize"}), "stage[2].type", "cannot follow 'share'"),
    (_config({"type": "baseline"}), "stage[1].name", "unique"),
])
def test_bad_configs_name_the_key_and_the_reason(raw, key, reason):
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert info.value.key == key
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{key}: ")


def test_missing_or_foreign_checkpoint_is_rejected(tmp_path):
    """A missing file, an empty file, an ONNX model and a zip that is not an npz are refused
    when the configuration is checked, each with one line naming the key; a minnet.save file
    passes."""
    import zipfile

    import minnet
    from minnet import models

    def check(path):
        return validate({"stage": [{"type": "baseline", "checkpoint": str(path)}]})
    missing = tmp_path / "nope.npz"
    with pytest.raises(ConfigError, match=r"stage\[0\].checkpoint: no such file"):
        check(missing)
    missing.write_bytes(b"")
    with pytest.raises(ConfigError, match="is not an npz"):
        check(missing)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(ConfigError, match=r"\[run\] model"):
        check(onnx)
    pickled = tmp_path / "model.pt"
    with zipfile.ZipFile(pickled, "w") as archive:
        archive.writestr("archive/data.pkl", b"pickle")
    with pytest.raises(ConfigError, match="is not an npz"):
        check(pickled)
    saved = tmp_path / "lenet.npz"
    minnet.save(models.lenet5(), saved)
    assert check(saved)


def test_quantize_and_share_may_be_followed_by_graph_and_export_only():
    for last in ("quantize", "share"):
        config = validate(_config({"type": last}, {"type": "graph"}, {"type": "export"}))
        assert [s["type"] for s in config["stages"]][-2:] == ["graph", "export"]


def test_toml_syntax_errors_name_the_source(tmp_path):
    with pytest.raises(ConfigError, match="my.toml: not valid TOML"):
        parse_config("[[stage]\ntype = 1", "my.toml")
    with pytest.raises(ConfigError, match="--config: no such file"):
        load_config(tmp_path / "absent.toml")
    path = tmp_path / "ok.toml"
    path.write_text('[[stage]]\ntype = "baseline"\nepochs = 1\n')
    config, text = load_config(path)
    assert config["stages"][0]["epochs"] == 1 and "epochs = 1" in text


def test_every_stage_type_has_a_schema_with_help():
    assert set(STAGES) == set(OPTIONS)
    for options in [RUN_OPTIONS, *OPTIONS.values()]:
        for key, option in options.items():
            assert option.help, key
            if option.default is not None and option.choices:
                assert option.default in option.choices


def test_shipped_toml_shows_the_declared_defaults():
    """Every ``key = value`` line of ``default_pipeline.toml`` (commented-out ones too) names a
    key its stage declares, and shows that key's declared default (where it has one) unless its
    comment says ``default ...``: the file cannot drift from the options declared beside the
    stages."""
    table, checked = RUN_OPTIONS, 0
    for line in default_config_text().splitlines():
        code, _, comment = line.lstrip("# ").partition("#")
        if code.startswith("[[stage]]"):
            table = None
        elif code.startswith("[run]"):
            table = RUN_OPTIONS
        elif re.match(r"\w+ = ", code):
            key, value = tomllib.loads(code).popitem()
            if key == "type":
                table = OPTIONS[value]
                continue
            assert table is not None and key in table, line
            if "default" not in comment and table[key].default is not None:
                assert value == table[key].default, line
                checked += 1
    assert checked >= 20
