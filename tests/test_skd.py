"""SKD / RSKD: substage methods, the cascade wiring, integration (ensemble, weight average)."""


import pytest
import torch

from raykd import models
from raykd.config import build_experiment
from raykd.errors import ConfigError, RaykdError
from raykd.integrate import average_state_dicts, recompute_batch_norm, weight_average_blob
from raykd.methods import build_distiller, validate_method_config
from raykd.methods.base import MethodContext
from raykd.models.ensemble import Ensemble


def _distiller(method, student="resnet8", teacher="resnet14"):
    torch.manual_seed(0)
    s, t = models.create(student, 10), models.create(teacher, 10)
    d = build_distiller(validate_method_config(method), s, t)
    d.setup(MethodContext(10, torch.zeros(8, dtype=torch.long), (3, 32, 32), 1, 1))
    return d


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(4, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 2, 3]),
            "index": torch.arange(4)}


@pytest.mark.parametrize("substage,terms", [("response", {"ce", "kd"}), ("feature", {"ce", "at", "df"}),
                                            ("relation", {"ce", "fsp"})])
def test_skd_substage_terms_and_a_step_lowers_the_loss(substage, terms):
    d = _distiller({"name": "skd", "substage": substage})
    batch = _batch()
    opt = torch.optim.SGD(d.parameters(), lr=0.02)
    first = None
    for _ in range(5):
        _, losses = d(batch)
        assert set(losses) == terms and all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert sum(d(batch)[1].values()).item() < first
    assert not any(k.startswith("term") for k in d.student.state_dict()), "connectors stay on the method"


def test_skd_response_is_ce_plus_weighted_kd():
    from raykd.losses import kd_loss

    d = _distiller({"name": "skd", "substage": "response", "kd_weight": 0.5, "temperature": 2})
    b = _batch()
    _, losses = d(b)
    s, t = d.student(b["image"]).logits, d.teacher(b["image"]).logits
    assert losses["kd"].item() == pytest.approx(0.5 * kd_loss(s, t, 2).item(), rel=1e-5)
    assert losses["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(s, b["label"]).item(), rel=1e-5)


def test_rskd_weights_follow_backbone_aux_weight_and_dagger():
    cfg = validate_method_config({"name": "rskd", "backbone": "feature", "aux_weight": 0.25})
    assert cfg.substage_weights() == {"response": 0.25, "feature": 1.0, "relation": 0.25}
    cfg = validate_method_config({"name": "rskd", "dagger": True, "eta": 2.0})
    assert cfg.substage_weights() == {"response": 2.0, "feature": 0.5, "relation": 0.0}
    base = _distiller({"name": "rskd", "aux_weight": 0.5})
    _, full = base(_batch())
    assert set(full) == {"ce", "kd", "at", "df", "fsp"}
    dagger = _distiller({"name": "rskd", "aux_weight": 0.5, "dagger": True})
    _, no_rel = dagger(_batch())
    assert set(no_rel) == {"ce", "kd", "at", "df"}, "RSKD-dagger has no relation term"
    for k in ("ce", "kd", "at", "df"):  # same seed, same models: the shared terms agree exactly
        assert no_rel[k].item() == pytest.approx(full[k].item(), rel=1e-5)
    c_f = _distiller({"name": "rskd", "backbone": "feature", "aux_weight": 0.5})
    _, cf = c_f(_batch())
    assert cf["kd"].item() == pytest.approx(0.5 * full["kd"].item(), rel=1e-5)
    assert cf["at"].item() == pytest.approx(2 * full["at"].item(), rel=1e-5)


def _skd_raw(tmp_path, **extra):
    raw = {
        "name": "skdcfg", "storage": str(tmp_path / "runs"),
        "nodes": {
            "teacher": {"model": "resnet14"},
            "response": {"cascade": ["resnet14", "resnet8", {"model": "resnet8"}], "teacher": "teacher",
                         "method": {"name": "skd"}},
            "feature": {"cascade": ["resnet8"], "teacher": "teacher", "method": {"name": "skd", "substage": "feature"}},
            "skd": {"members": ["response", "feature"], "method": {"name": "ensemble"}},
        },
    }
    raw["nodes"].update(extra)
    return raw


def test_cascade_expands_into_linked_nodes(tmp_path):
    exp = build_experiment(_skd_raw(tmp_path))
    chain = [(n.name, n.model, n.teacher, n.branch, n.level) for n in exp.nodes.values() if n.branch == "response"]
    assert chain == [("response.1", "resnet14", "teacher", "response", 1),
                     ("response.2", "resnet8", "response.1", "response", 2),
                     ("response", "resnet8", "response.2", "response", 3)]
    assert exp.nodes["skd"].members == ("response", "feature") and exp.nodes["skd"].model == "ensemble"
    assert exp.final == "skd"
    from raykd.pipeline.plan import make_plan

    plan = make_plan(exp)
    assert plan["response"].parents == ("response.2",) and plan["skd"].parents == ("response", "feature")
    assert list(plan).index("response.1") < list(plan).index("response.2") < list(plan).index("skd")


@pytest.mark.parametrize("patch,message", [
    ({"response": {"cascade": ["resnet8"], "model": "resnet14", "teacher": "teacher", "method": {"name": "skd"}}},
     "nodes.response.model: 'resnet14' but the cascade ends with 'resnet8'"),
    ({"response": {"cascade": ["resnet8"], "method": {"name": "skd"}}}, "nodes.response.cascade: a cascade starts from a teacher"),
    ({"feature": {"model": "resnet8", "teacher": "teacher", "method": {"name": "skd", "substage": "feature", "top_k": 32}}},
     "nodes.feature.method: top_k 32 is larger than the teacher's smallest paired stage (16 channels"),
    ({"skd": {"members": ["response", "feature"], "method": {"name": "ensembel"}}}, "Did you mean 'ensemble'?"),
    ({"skd": {"members": ["response", "nope"], "method": {"name": "ensemble"}}}, "nodes.skd.members: no node named 'nope'"),
    ({"avg": {"members": ["response", "teacher"], "method": {"name": "weight_average"}}},
     "weight averaging needs one architecture, but the members train response=resnet8, teacher=resnet14"),
    ({"x": {"model": "resnet8", "teacher": "teacher", "method": {"name": "kd"}, "train": {"seed": 3}},
      "avg": {"members": ["feature", "x"], "method": {"name": "weight_average"}}},
     "needs members trained from one shared initialisation (same train.seed and init node)"),
    ({"d": {"model": "resnet8", "teacher": "skd", "method": {"name": "skd", "substage": "relation"}}}, None),
])
def test_skd_config_mistakes_are_named(tmp_path, patch, message):
    raw = _skd_raw(tmp_path, **patch)
    if message is None:  # an ensemble may teach through logits
        build_experiment(raw)
        return
    with pytest.raises(ConfigError) as e:
        build_experiment(raw)
    assert message in str(e.value)


def test_ensemble_is_the_mean_of_member_softmaxes():
    torch.manual_seed(0)
    members = [models.create(m, 10).eval() for m in ("resnet8", "resnet14", "wrn_16_1")]
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = torch.stack([m(x).logits.softmax(1) for m in members]).mean(0)
        got = Ensemble(members)(x).logits.softmax(1)
    assert torch.allclose(got, expected, atol=1e-6)
    assert models.count_parameters(Ensemble(members)) == sum(models.count_parameters(m) for m in members)


def _blob(model, fingerprint="a", name="resnet8"):
    return {"model": name, "model_kwargs": {}, "video": False, "init_fingerprint": fingerprint,
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "num_classes": 10, "metrics": {}}


def test_weight_average_averages_floats_and_refuses_mismatched_members():
    torch.manual_seed(0)
    a, b = models.create("resnet8", 10), models.create("resnet8", 10)
    avg = average_state_dicts([a.state_dict(), b.state_dict()])
    k = "fc.weight" if "fc.weight" in avg else next(n for n, v in avg.items() if v.is_floating_point())
    assert torch.allclose(avg[k], (a.state_dict()[k] + b.state_dict()[k]) / 2)
    counters = [n for n, v in avg.items() if not v.is_floating_point()]
    assert counters and all(torch.equal(avg[n], a.state_dict()[n]) for n in counters)
    assert weight_average_blob([_blob(a), _blob(b)], ["a", "b"])["model"] == "resnet8"
    with pytest.raises(RaykdError, match="did not start from the same weights"):
        weight_average_blob([_blob(a, "x"), _blob(b, "y")], ["a", "b"])
    with pytest.raises(RaykdError, match="averaging needs one architecture"):
        weight_average_blob([_blob(a), _blob(models.create("resnet14", 10), name="resnet14")], ["a", "c"])


def test_recompute_batch_norm_matches_the_data_statistics():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    data = [{"image": torch.randn(8, 3, 4, 4) * 3 + 1} for _ in range(3)]
    assert recompute_batch_norm(m, data) == 1
    with torch.no_grad():
        acts = torch.cat([m[0](b["image"]) for b in data])
    assert torch.allclose(m[1].running_mean, acts.mean(dim=(0, 2, 3)), atol=1e-5)
    assert m[1].momentum == 0.1, "momentum restored"


def test_skd_pipeline_locally_wires_cascades_integrates_and_trains_on_packages(tmp_path, monkeypatch):
    """Link i+1 is taught by link i's checkpoint; finals are evaluated, logged and registered; a
    packages node turns the images into clips a video student trains on (one pipeline: one
    MLflow store to set up)."""
    from mlflow.tracking import MlflowClient

    import raykd.pipeline.local as local
    from raykd.pipeline import run_pipeline

    seen = {}
    real = local.run_task
    monkeypatch.setattr(local, "run_task", lambda task, **kw: (seen.setdefault(task.name, task), real(task, **kw))[1])
    raw = _skd_raw(tmp_path, skd_avg={"members": ["response", "feature"], "method": {"name": "weight_average"}},
                   distill={"model": "resnet8", "teacher": "skd", "method": {"name": "kd"}},
                   packages={"teacher": "teacher", "method": {"name": "packages", "frames": 2}},
                   clips={"model": "resnet8", "teacher": "teacher", "dataset": "packages", "method": {"name": "kd"}})
    raw["nodes"]["response"]["cascade"] = ["resnet8", "resnet8"]
    raw.update(data={"name": "digits", "batch_size": 64, "train_limit": 192}, train={"epochs": 1}, final="skd")
    result = run_pipeline(build_experiment(raw), executor="local", log=lambda *_: None)
    assert result.ok, {n: o.error for n, o in result.nodes.items()}
    nodes = result.nodes
    assert seen["response"].teacher_path == str(nodes["response.1"].plan.dir / "final.pt")
    assert seen["response.1"].teacher_path == str(nodes["teacher"].plan.dir / "final.pt")
    assert seen["distill"].teacher_path == str(nodes["skd"].plan.dir / "final.pt")
    client = MlflowClient(result.tracking_uri)
    tags = client.get_run(nodes["response"].run_id).data.tags
    assert (tags["raykd.branch"], tags["raykd.cascade_level"], tags["raykd.teacher_run_id"]) == \
        ("response", "2", nodes["response.1"].run_id)
    skd = client.get_run(nodes["skd"].run_id).data
    assert skd.tags["raykd.members"] == "response,feature"
    member_params = nodes["response"].result["params"] + nodes["feature"].result["params"]
    assert skd.metrics["params"] == member_params and skd.metrics["latency_ms"] > 0
    assert 0 <= skd.metrics["test/top1"] <= 100
    assert nodes["skd_avg"].result["params"] == nodes["feature"].result["params"]
    from raykd.engine import load_student

    ens, meta = load_student(nodes["skd"].plan.dir / "final.pt")
    assert isinstance(ens, Ensemble) and meta["model"] == "ensemble"
    assert result.registered == ("skdcfg-skd", 1)
    from raykd.pipeline.summary import format_table

    table = format_table(result)
    assert "response+feature" in table and "ms/input" in table

    from raykd.models import VideoClassifier

    pk = client.get_run(nodes["packages"].run_id).data.metrics
    assert {"packages/agreement", "packages/mean_entropy", "packages/pseudo_share"} <= set(pk)
    assert client.get_run(nodes["clips"].run_id).data.tags["raykd.dataset_node"] == "packages"
    model, meta = load_student(nodes["clips"].plan.dir / "final.pt")
    assert isinstance(model, VideoClassifier) and meta["video"]
    assert model(torch.zeros(1, 2, 3, 32, 32)).logits.shape == (1, 10)
