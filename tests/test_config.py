"""Config loading, overrides and the errors a user sees for each kind of mistake."""

import pytest
import yaml

from pathlib import Path

from raykd.config import apply_override, build_experiment, load_experiment
from raykd.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, raw, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def error_of(fn, *a, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*a, **kw)
    return str(e.value)


def test_unknown_key_names_path_and_suggests(tmp_path, tiny_raw):
    tiny_raw["train"]["epohcs"] = 3
    msg = error_of(load_experiment, write(tmp_path, tiny_raw))
    assert "train.epohcs: unknown key 'epohcs'" in msg
    assert "Did you mean 'epochs'?" in msg


def test_unknown_nested_and_node_keys(tiny_raw):
    tiny_raw["train"]["optimizer"]["momentun"] = 0.9
    msg = error_of(build_experiment, tiny_raw)
    assert "train.optimizer.momentun" in msg and "'momentum'" in msg
    tiny_raw["train"]["optimizer"].pop("momentun")
    tiny_raw["nodes"]["kd"]["techer"] = "teacher"
    msg = error_of(build_experiment, tiny_raw)
    assert "nodes.kd.techer" in msg and "'teacher'" in msg


def test_method_field_typo_is_reported_under_the_node(tiny_raw):
    msg = error_of(build_experiment, tiny_raw, ["nodes.kd.method.temprature=2"])
    assert "nodes.kd.method.temprature: unknown key" in msg
    assert "Did you mean 'temperature'?" in msg


def test_wrong_type_names_path_and_expected_type(tiny_raw):
    msg = error_of(build_experiment, tiny_raw, ["train.epochs=abc"])
    assert "train.epochs: expected an integer, got 'abc'" in msg
    msg = error_of(build_experiment, tiny_raw, ["nodes.kd.method.temperature=hot"])
    assert "nodes.kd.method.temperature: expected a number" in msg


def test_out_of_range_and_literal(tiny_raw):
    assert "train.epochs" in error_of(build_experiment, tiny_raw, ["train.epochs=0"])
    msg = error_of(build_experiment, tiny_raw, ["train.optimizer.name=adam"])
    assert "train.optimizer.name" in msg and "'sgd'" in msg and "'adamw'" in msg


def test_missing_file_suggests_close_config(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "quickstart.yaml").write_text("name: q\n")
    monkeypatch.chdir(tmp_path)
    msg = error_of(load_experiment, "conf/quickstrt.yaml")
    assert "config file not found: 'conf/quickstrt.yaml'" in msg
    assert "conf/quickstart.yaml" in msg


def test_invalid_yaml_names_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    assert "bad.yaml' is not valid YAML" in error_of(load_experiment, p)


def test_unknown_model_method_and_teacher(tiny_raw):
    tiny_raw["nodes"]["vanilla"]["model"] = "resnet9"
    tiny_raw["nodes"]["kd"]["teacher"] = "teachr"
    tiny_raw["nodes"]["teacher"]["method"] = {"name": "vanila"}
    msg = error_of(build_experiment, tiny_raw)
    assert "nodes.vanilla.model: unknown model 'resnet9'" in msg
    assert "nodes.kd.teacher: no node named 'teachr'. Did you mean 'teacher'?" in msg
    assert "nodes.teacher.method.name: unknown method 'vanila'. Did you mean 'vanilla'?" in msg


def test_teacher_required_and_forbidden(tiny_raw):
    del tiny_raw["nodes"]["kd"]["teacher"]
    tiny_raw["nodes"]["vanilla"]["teacher"] = "teacher"
    msg = error_of(build_experiment, tiny_raw)
    assert "nodes.kd: method 'kd' needs a teacher" in msg
    assert "nodes.vanilla: method 'vanilla' does not use a teacher" in msg


def test_cycle_is_an_error(tiny_raw):
    tiny_raw["nodes"]["teacher"] = {"model": "resnet8", "teacher": "kd", "method": {"name": "kd"}}
    assert "cycle" in error_of(build_experiment, tiny_raw)


def test_overrides_parse_yaml_values_and_create_sections(tiny_raw):
    exp = build_experiment(tiny_raw, ["train.epochs=7", "train.schedule.milestones=[3, 5]",
                                      "nodes.kd.method.temperature=2", "nodes.kd.train.seed=3"])
    assert exp.nodes["kd"].train.epochs == 7
    assert exp.nodes["kd"].train.schedule.milestones == [3, 5]
    assert exp.nodes["kd"].method.temperature == 2.0
    assert exp.nodes["kd"].train.seed == 3
    assert exp.nodes["vanilla"].train.seed == 0  # a node override stays on that node


def test_malformed_override(tiny_raw):
    assert "must look like 'section.key=value'" in error_of(build_experiment, tiny_raw, ["train.epochs"])
    msg = error_of(build_experiment, tiny_raw, ["train.epochs.max=3"])
    assert "'train.epochs' is a value, not a section" in msg


def test_apply_override_does_not_touch_other_keys():
    raw = {"a": {"b": 1, "c": 2}}
    apply_override(raw, "a.b=5")
    assert raw == {"a": {"b": 5, "c": 2}}


def test_node_sections_merge_over_shared(tiny_raw):
    tiny_raw["nodes"]["teacher"]["train"] = {"optimizer": {"lr": 0.2}}
    exp = build_experiment(tiny_raw)
    assert exp.nodes["teacher"].train.optimizer.lr == 0.2
    assert exp.nodes["teacher"].train.optimizer.momentum == 0.9  # untouched siblings survive
    assert exp.nodes["kd"].train.optimizer.lr == 0.05


def test_print_config_round_trips(tiny_raw):
    exp = build_experiment(tiny_raw)
    text = exp.to_yaml()
    back = yaml.safe_load(text)
    assert back["nodes"]["kd"]["method"] == {"name": "kd", "temperature": 4.0, "alpha": 0.9, "ce_weight": 0.1}
    assert back["nodes"]["kd"]["train"]["epochs"] == 2
    assert back["final"] == "kd"


def test_final_defaults_to_the_last_leaf(tiny_raw):
    del tiny_raw["final"]
    tiny_raw["nodes"] = {"kd": tiny_raw["nodes"]["kd"], "teacher": tiny_raw["nodes"]["teacher"]}
    assert build_experiment(tiny_raw).final == "kd", "a teacher is never the default final student"


def test_per_node_key_at_top_level_points_to_the_node(tiny_raw):
    msg = error_of(build_experiment, tiny_raw, ["method.temperature=2"])
    assert "'method' belongs to a node: write nodes.<node>.method..., e.g. nodes.kd.method" in msg


# --- node names are folder and MLflow names: nothing that could leave the storage or break a run name ---

BAD_NAMES = ["../../escape", "/tmp/x/y", "a/b", "a\\b", "", ".", "..", ".hidden", "-dash", "a b", "\u200bteacher",
             "naïve", "tab\there", "x" * 101, "nul\x00"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_path_like_or_invisible_node_names_are_refused_before_anything_is_written(tmp_path, tiny_raw, name):
    raw = dict(tiny_raw, storage=str(tmp_path / "runs"))
    raw["nodes"] = {**raw["nodes"], name: {"model": "resnet8"}}
    with pytest.raises(ConfigError, match=r"nodes: the node name .* is not allowed: names use letters, digits"):
        build_experiment(raw)
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("name", ["teacher", "kd_s0", "A-1.b", "_private", "9lives", "x" * 100])
def test_ordinary_node_names_are_accepted(tiny_raw, name):
    raw = dict(tiny_raw, nodes={**tiny_raw["nodes"], name: {"model": "resnet8"}}, final=name)
    assert name in build_experiment(raw).nodes


def test_node_folders_are_checked_to_stay_inside_the_store(tmp_path):
    from raykd.pipeline.plan import node_dir

    assert node_dir(tmp_path, "kd", "ab" * 32) == (tmp_path / "nodes" / ("kd-" + "ab" * 6)).resolve()
    for name in ("../../escape", "/tmp/x/y", "a/../../b"):
        with pytest.raises(ConfigError, match="outside"):
            node_dir(tmp_path, name, "ab" * 32)


# --- nothing is accepted silently ------------------------------------------------------------------------

def test_an_override_naming_no_node_is_an_error_and_plus_adds_one(tiny_raw):
    for item, hint in [("nodes.techer.model=resnet20", "Did you mean 'teacher'?"),
                       ("nodes.kdd.method.temperature=2", "Did you mean 'kd'?"),
                       ("nodes.zzz=null", "Nodes: teacher, vanilla, kd.")]:
        msg = error_of(build_experiment, tiny_raw, [item])
        assert f"override '{item}': no node named '{item.split('.')[1].split('=')[0]}'." in msg and hint in msg
        assert "start the override with '+': +nodes." in msg
    exp = build_experiment(tiny_raw, ["+nodes.extra.model=resnet8", "+nodes.extra.teacher=teacher",
                                      "+nodes.extra.method.name=kd"])
    assert exp.nodes["extra"].teacher == "teacher" and exp.nodes["extra"].method.name == "kd"
    assert build_experiment(tiny_raw, ["nodes.vanilla=null"]).nodes.keys() == {"teacher", "kd"}


@pytest.mark.parametrize("text,lines,key", [
    ("name: a\nname: b\nnodes: {t: {model: resnet8}}\n", (1, 2), "name"),
    ("name: a\ntrain:\n  epochs: 3\n  seed: 1\n  epochs: 5\nnodes: {t: {model: resnet8}}\n", (3, 5), "epochs"),
    ("name: a\nnodes:\n  t: {model: resnet8}\n  s: {model: resnet8}\n  t: {model: resnet20}\n", (3, 5), "t"),
    ("name: a\nnodes: {t: {model: resnet8, model: resnet20}}\n", (2, 2), "model"),
])
def test_duplicate_yaml_keys_name_both_lines(tmp_path, text, lines, key):
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    msg = error_of(load_experiment, p)
    assert f"'{p}': key '{key}' appears twice in one mapping (lines {lines[0]} and {lines[1]}); keep one." in msg


def test_a_duplicate_key_in_a_base_file_or_an_override_is_an_error(tmp_path, tiny_raw):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 3\n  epochs: 4\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\nname: a\nnodes: {t: {model: resnet8}}\n")
    assert "base.yaml': key 'epochs' appears twice in one mapping (lines 2 and 3)" in error_of(load_experiment, tmp_path / "exp.yaml")
    msg = error_of(build_experiment, tiny_raw, ["nodes.kd.method={name: kd, alpha: 1, alpha: 2}"])
    assert "key 'alpha' appears twice" in msg


@pytest.mark.parametrize("item,expected", [
    ("train.epochs=true", "train.epochs: expected a number (true and false are not numbers), got True."),
    ("train.optimizer.lr=false", "train.optimizer.lr: expected a number"),
    ("data.batch_size=true", "data.batch_size: expected a number"),
    ("train.optimizer.betas=[true, 0.9]", "train.optimizer.betas: expected numbers"),
    ("nodes.kd.method.temperature=true", "nodes.kd.method.temperature: expected a number"),
    ("resources.gpus_per_worker=true", "resources.gpus_per_worker: expected a number"),
    ("data.augment.flip=1", "data.augment.flip: expected true or false, got 1."),
    ("train.channels_last=yes please", "train.channels_last: expected true or false, got 'yes please'."),
    ("train.optimizer.lr=.inf", "train.optimizer.lr: Input should be a finite number, got inf."),
    ("train.grad_clip=.inf", "train.grad_clip: Input should be a finite number, got inf."),
    ("train.optimizer.weight_decay=.nan", "train.optimizer.weight_decay: Input should be a finite number"),
    ("nodes.kd.method.alpha=-.inf", "nodes.kd.method.alpha: Input should be a finite number"),
])
def test_booleans_are_not_numbers_flags_are_booleans_and_numbers_are_finite(tiny_raw, item, expected):
    assert expected in error_of(build_experiment, tiny_raw, [item])


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\u00e9\nnodes: {t: {model: resnet8}}\n".encode("latin-1"))
    assert error_of(load_experiment, p) == f"config file '{p}' is not UTF-8 text (byte 9: invalid continuation byte)."


# --- the corpus of malformed configs: each names the file and the field ------------------------------------

MALFORMED = sorted((REPO_ROOT / "tests" / "fixtures" / "malformed").glob("*.yaml"))


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.stem)
def test_each_malformed_config_gets_one_paragraph_naming_its_file_and_field(path):
    expect = path.read_bytes().split(b"\n", 1)[0].decode().removeprefix("# expect: ")
    msg = error_of(load_experiment, path)
    assert expect in msg and str(path) in msg, msg
    assert "Traceback" not in msg and len(msg) < 2000


def test_the_corpus_is_large():
    assert len(MALFORMED) >= 30


@pytest.mark.parametrize("override, message", [
    ("nodes.kd.train.epochs=-1", "nodes.kd.train.epochs: Input should be greater than 0, got -1."),
    ("nodes.kd.resources.gpus_per_worker=1.5", "nodes.kd.resources.gpus_per_worker: a worker takes a fraction of "
                                               "one GPU (0 < g <= 1) or whole GPUs (2, 3, ...), got 1.5."),
    ("nodes.kd.resources={workers: 2, gpus_per_worker: 0.25}", "nodes.kd.resources: gpus_per_worker 0.25 with 2 "
                                                               "workers: DDP ranks cannot share a GPU"),
])
def test_a_node_section_error_is_one_line_under_one_heading(tiny_raw, override, message):
    with pytest.raises(ConfigError) as e:
        build_experiment(tiny_raw, [override])
    assert str(e.value).startswith("invalid config:\n  " + message) and str(e.value).count("invalid config") == 1


def test_fractional_and_whole_gpus_per_worker_are_accepted(tiny_raw):
    exp = build_experiment(tiny_raw, ["nodes.kd.resources.gpus_per_worker=0.25", "nodes.vanilla.resources.workers=2",
                                      "nodes.vanilla.resources.gpus_per_worker=2"])
    assert exp.nodes["kd"].resources.gpus_per_worker == 0.25 and exp.nodes["vanilla"].resources.gpus_per_worker == 2
