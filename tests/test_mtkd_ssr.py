"""MTKD-SSR: SRD, REVIEW (every pattern, both directions), SCD (with and without a connector) and FD against
float64 hand computations; eq. 10 assembled by the method from real models; the stage_probes node leaving
its teacher untouched and exporting it with its heads; export of the plain student; config errors."""

import numpy as np
import pytest
import torch

from raykd import methods, models
from raykd.config import build_experiment
from raykd.engine import RunContext, fit, load_student
from raykd.errors import ConfigError
from raykd.losses import fd_loss, review_loss, review_pairs, scd_loss, srd_loss
from raykd.methods.base import MethodContext
from raykd.models.stage_heads import StageHeads, WithStageHeads
from raykd.pipeline import make_plan


def np_kl(learner, target, T, t_squared=True):
    """KL(softmax(target/T) || softmax(learner/T)) summed over classes, batch mean, in float64."""
    def log_softmax(z):
        z = np.asarray(z, dtype=np.float64) / T
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    lt, ls = log_softmax(target), log_softmax(learner)
    kl = (np.exp(lt) * (lt - ls)).sum(1).mean()
    return kl * T * T if t_squared else kl


def stage_logits(k=4, b=5, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, c, generator=g) * 2).requires_grad_() for _ in range(k)]


# --- the pure losses ------------------------------------------------------------------------------------

@pytest.mark.parametrize("t_squared", [True, False])
def test_srd_sums_stage_to_stage_kl(t_squared):
    s, t = stage_logits(seed=1), stage_logits(seed=2)
    expected = sum(np_kl(a.detach(), b.detach(), 3.0, t_squared) for a, b in zip(s, t))
    assert srd_loss(s, t, 3.0, t_squared).item() == pytest.approx(expected, rel=1e-6)
    assert expected > 0


# Fig. 8 for K = 4, as (target, learner) 1-based stage pairs.
FIG8 = {
    None: {(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4)},  # 8a: every stage reviews all earlier ones
    3: {(2, 3), (2, 4), (3, 4)},                              # 8b: stage 4 reviews 2, 3; stage 3 reviews 2
    2: {(3, 4)},                                              # 8c: stage 4 reviews 3 only
}
DEEP_TO_SHALLOW = {None: {(4, 1), (4, 2), (4, 3)}, 3: {(4, 2), (4, 3)}, 2: {(4, 3)}}


@pytest.mark.parametrize("window", [None, 3, 2])
@pytest.mark.parametrize("direction", ["shallow_to_deep", "deep_to_shallow"])
def test_review_patterns_and_values(window, direction):
    pairs = review_pairs(4, window, direction)
    expected_pairs = (FIG8 if direction == "shallow_to_deep" else DEEP_TO_SHALLOW)[window]
    assert {(t + 1, s + 1) for t, s in pairs} == expected_pairs and len(pairs) == len(expected_pairs)
    z = stage_logits(seed=3)
    expected = sum(np_kl(z[s].detach(), z[t].detach(), 2.0) for t, s in pairs)
    loss = review_loss(z, pairs, 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    learners = {s for _, s in pairs}
    for i, zi in enumerate(z):
        got = zi.grad is not None and zi.grad.abs().sum() > 0
        assert got == (i in learners), f"stage {i + 1}: only learners get a gradient (targets are detached)"


def test_review_window_must_fit_the_stages():
    assert review_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert review_pairs(3, 3) == review_pairs(3)
    with pytest.raises(ValueError, match="2..3 stages"):
        review_pairs(3, 4)


def np_channel_weights(f):
    return np.asarray(f, dtype=np.float64).mean(axis=(2, 3))


def test_scd_is_channel_mean_mse_summed_over_stages():
    g = torch.Generator().manual_seed(4)
    s = [torch.relu(torch.randn(3, c, h, h, generator=g)) for c, h in ((4, 8), (6, 4))]
    t = [torch.relu(torch.randn(3, c, h, h, generator=g)) for c, h in ((4, 8), (6, 4))]
    ws = [f.mean(dim=(2, 3)) for f in s]
    wt = [f.mean(dim=(2, 3)) for f in t]
    expected = sum(((np_channel_weights(a) - np_channel_weights(b)) ** 2).sum() / (3 * a.shape[1]) for a, b in zip(s, t))
    assert scd_loss(ws, wt).item() == pytest.approx(expected, rel=1e-6)


def test_fd_is_feature_map_mse_summed_over_stages_pooling_the_larger_map():
    g = torch.Generator().manual_seed(5)
    s = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)]
    t = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    a0, b0 = s[0].double().numpy(), t[0].double().numpy()
    pooled = s[1].double().numpy().reshape(2, 5, 2, 2, 2, 2).mean(axis=(3, 5))  # 4x4 -> 2x2 by 2x2 means
    expected = ((a0 - b0) ** 2).mean() + ((pooled - t[1].double().numpy()) ** 2).mean()
    assert fd_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


# --- the method ---------------------------------------------------------------------------------------

def probed(model="resnet20", classes=10, seed=1):
    torch.manual_seed(seed)
    net = models.create(model, classes)
    return WithStageHeads(net, StageHeads(net.stage_channels[:-1], classes)).eval()


def distiller(student="resnet8", teacher=None, classes=10, **cfg):
    torch.manual_seed(0)
    d = methods.build_distiller(methods.validate_method_config({"name": "mtkd_ssr", **cfg}),
                                models.create(student, classes), teacher if teacher is not None else probed())
    d.setup(MethodContext(num_classes=classes, train_labels=torch.arange(16) % classes, image_shape=(3, 32, 32),
                          epochs=2, steps_per_epoch=2))
    return d


def batch(n=6, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "label": torch.arange(n) % classes,
            "index": torch.arange(n)}


def float64_forward(d):
    """The distiller's losses on one batch in float64 and eval mode (fixed BN statistics), with the teacher's
    and student's outputs for the same batch, to recompute every term by hand."""
    d.double()
    d.eval()
    b = batch()
    b["image"] = b["image"].double()
    _, losses = d(b)
    with torch.no_grad():
        return b, losses, d.teacher(b["image"]), d.student(b["image"])


def test_eq10_assembled_from_the_models_outputs():
    d = distiller(teacher=probed("resnet20"))
    b, losses, t, s = float64_forward(d)
    with torch.no_grad():
        s_logits = [z.numpy() for z in (*d.heads(s.features), s.logits)]
        t_logits = [z.numpy() for z in (*t.stage_logits, t.logits)]
    y = b["label"].numpy()

    def np_ce(z):
        z = z - z.max(1, keepdims=True)
        return -(z - np.log(np.exp(z).sum(1, keepdims=True)))[np.arange(len(y)), y].mean()

    assert len(s_logits) == 3, "resnet8: heads on stages 1-2, stage 3 is the model's classifier"
    assert losses["ce"].item() == pytest.approx(sum(np_ce(z) for z in s_logits), rel=1e-9)
    assert losses["srd"].item() == pytest.approx(sum(np_kl(a, b_, 3.0) for a, b_ in zip(s_logits, t_logits)), rel=1e-9)
    review = sum(np_kl(s_logits[i], s_logits[j], 2.0) for i in range(3) for j in range(i))
    assert losses["review"].item() == pytest.approx(review, rel=1e-9)
    # resnet8 and resnet20 share their stage widths (16, 32, 64): no connector
    scd = sum(((np_channel_weights(a) - np_channel_weights(b_)) ** 2).mean() for a, b_ in zip(s.features, t.features))
    assert losses["scd"].item() == pytest.approx(scd, rel=1e-9)


def test_scd_through_a_connector_where_channels_differ():
    d = distiller(teacher=probed("resnet32x4"), alpha=0, beta=0)  # stages 16/32/64 -> 64/128/256
    assert [c.weight.shape[:2] for c in d.connectors] == [(64, 16), (128, 32), (256, 64)]
    _, losses, t, s = float64_forward(d)
    with torch.no_grad():
        # the paper's order: the 1x1 conv on the student's map, then the channel weights of eq. 8
        ws = [conv(f).mean(dim=(2, 3)) for conv, f in zip(d.connectors, s.features)]
        expected = sum(((a.numpy() - np_channel_weights(b_)) ** 2).mean() for a, b_ in zip(ws, t.features))
    assert set(losses) == {"ce", "scd"}
    assert losses["scd"].item() == pytest.approx(expected, rel=1e-9)


def test_fd_variant_compares_connected_maps():
    d = distiller(teacher=probed("resnet32x4"), alpha=0, beta=0, channel_loss="fd")
    _, losses, t, s = float64_forward(d)
    with torch.no_grad():
        expected = sum(((conv(f) - g) ** 2).mean().item() for conv, f, g in zip(d.connectors, s.features, t.features))
    assert set(losses) == {"ce", "fd"} and losses["fd"].item() == pytest.approx(expected, rel=1e-9)


def test_variants_select_their_terms_and_skip_an_unused_teacher():
    b = batch()
    assert set(distiller()(b)[1]) == {"ce", "srd", "review", "scd"}
    assert set(distiller(gamma=0)(b)[1]) == {"ce", "srd", "review"}, "variant A"
    assert set(distiller(beta=0, gamma=0)(b)[1]) == {"ce", "srd"}, "variant D"
    calls = []
    teacher = probed()
    teacher.register_forward_hook(lambda *_: calls.append(1))
    e = distiller(teacher=teacher, alpha=0, gamma=0)
    assert set(e(b)[1]) == {"ce", "review"} and not calls, "variant E never runs the teacher"
    assert not hasattr(e, "connectors")
    full = distiller(t_squared=False)(b)[1]
    scaled = distiller()(b)[1]
    assert scaled["srd"].item() == pytest.approx(9 * full["srd"].item(), rel=1e-5), "T1 3: T^2 = 9"
    assert scaled["review"].item() == pytest.approx(4 * full["review"].item(), rel=1e-5), "T2 2: T^2 = 4"


def test_heads_are_training_only_and_each_reports_its_accuracy():
    d = distiller()
    plain = models.create("resnet8", 10)
    assert models.count_parameters(d.student) == models.count_parameters(plain)
    heads = sum(c * 10 + 10 for c in (16, 32))
    assert models.count_parameters(d) == models.count_parameters(plain) + heads
    with torch.no_grad():
        out = d.student(batch()["image"])
    assert set(d.eval_heads(out)) == {"stage1", "stage2"}


# --- nodes: probes, export, config -------------------------------------------------------------------

def experiment(tmp_path, **nodes):
    raw = {"name": "mt", "storage": str(tmp_path / "runs"),
           "data": {"name": "digits", "batch_size": 32, "train_limit": 128, "augment": {"crop_padding": 2, "flip": False}},
           "train": {"epochs": 1, "optimizer": {"lr": 0.05}},
           "nodes": {"teacher": {"model": "resnet8"},
                     "probes": {"model": "resnet8", "init": "teacher", "method": {"name": "stage_probes"},
                                "train": {"epochs": 3, "optimizer": {"lr": 0.2}}},
                     **nodes}}
    return make_plan(build_experiment(raw))


def run(pn):
    return fit(pn.node, RunContext(out_dir=pn.dir, log=lambda *_: None))


def test_probes_leave_the_teacher_unchanged_and_travel_with_it(tmp_path):
    plan = experiment(tmp_path, student={"model": "resnet8", "teacher": "probes", "method": {"name": "mtkd_ssr"}})
    run(plan["teacher"])
    teacher, _ = load_student(plan["teacher"].dir / "final.pt")
    seen = {}
    result = fit(plan["probes"].node, RunContext(out_dir=plan["probes"].dir, init_path=plan["teacher"].dir / "final.pt",
                                                 log=lambda *_: None, on_epoch=lambda e, m: seen.update({e: m})))
    probed_teacher, meta = load_student(plan["probes"].dir / "final.pt")
    assert isinstance(probed_teacher, WithStageHeads) and meta["stage_heads"] == 2
    before, after = teacher.state_dict(), probed_teacher.backbone.state_dict()
    assert set(before) == set(after) and all(torch.equal(before[k], after[k]) for k in before), \
        "weights and BN statistics of the teacher are untouched"
    assert result["test/top1"] == pytest.approx(teacher_result(plan)["test/top1"])
    first, last = seen[1], seen[3]
    assert last["train/ce"] < first["train/ce"], "the probes learn"
    assert 10 < result["test/stage2_top1"] <= 100 and "test/stage1_top1" in result
    x = torch.randn(4, 3, 32, 32)
    out = probed_teacher(x)
    assert torch.equal(out.logits, teacher(x).logits) and len(out.stage_logits) == 2
    # the student learns from the probed teacher and exports the plain resnet8
    student_result = fit(plan["student"].node, RunContext(out_dir=plan["student"].dir, log=lambda *_: None,
                                                          teacher_path=plan["probes"].dir / "final.pt"))
    student, meta = load_student(plan["student"].dir / "final.pt")
    plain = models.create("resnet8", 10)
    assert type(student) is type(plain) and meta["stage_heads"] == 0
    assert set(student.state_dict()) == set(plain.state_dict())
    assert models.count_parameters(student) == models.count_parameters(plain) == student_result["params"]
    assert {"test/stage1_top1", "test/stage2_top1"} <= set(student_result)


def teacher_result(plan):
    return torch.load(plan["teacher"].dir / "final.pt", weights_only=False)["metrics"]


def test_a_probe_node_can_start_a_student_with_init(tmp_path):
    plan = experiment(tmp_path, again={"model": "resnet8", "init": "probes"})
    run(plan["teacher"])
    fit(plan["probes"].node, RunContext(out_dir=plan["probes"].dir, init_path=plan["teacher"].dir / "final.pt",
                                        log=lambda *_: None))
    fit(plan["again"].node, RunContext(out_dir=plan["again"].dir, init_path=plan["probes"].dir / "final.pt",
                                       log=lambda *_: None))  # the heads are unwrapped, the backbone copied


def test_config_errors_name_the_node_and_field(tmp_path):
    with pytest.raises(ConfigError, match=r"nodes\.student\.teacher: mtkd_ssr's SRD \(alpha > 0\) distils the "
                                          r"teacher's stage classifiers.*this teacher is a 'vanilla' node"):
        experiment(tmp_path, student={"model": "resnet8", "teacher": "teacher", "method": {"name": "mtkd_ssr"}})
    experiment(tmp_path, student={"model": "resnet8", "teacher": "teacher", "method": {"name": "mtkd_ssr", "alpha": 0}})
    with pytest.raises(ConfigError, match=r"nodes\.lonely: method 'stage_probes' works on a trained model; add 'init: <node>'"):
        experiment(tmp_path, lonely={"model": "resnet8", "method": {"name": "stage_probes"}})
    with pytest.raises(ConfigError, match=r"nodes\.student\.method: review: window:4 but the student has 3 stages"):
        experiment(tmp_path, student={"model": "resnet8", "teacher": "probes",
                                      "method": {"name": "mtkd_ssr", "review": "window:4"}})
    with pytest.raises(ConfigError, match=r"nodes\.student\.method\.review: review must be 'all' or 'window:N' with "
                                          r"N >= 2 .*got 'last:2'"):
        experiment(tmp_path, student={"model": "resnet8", "teacher": "probes",
                                      "method": {"name": "mtkd_ssr", "review": "last:2"}})
    with pytest.raises(ConfigError, match=r"nodes\.student\.method: SRD and SCD pair stage i of the teacher with stage "
                                          r"i of the student, but the teacher has 3 stages and the student 4"):
        experiment(tmp_path, student={"model": "cifar_resnet18", "teacher": "probes", "method": {"name": "mtkd_ssr"}})
    with pytest.raises(ConfigError, match=r"nodes\.student\.method\.t1: Input should be greater than 0"):
        experiment(tmp_path, student={"model": "resnet8", "teacher": "probes", "method": {"name": "mtkd_ssr", "t1": 0}})
    with pytest.raises(ConfigError, match=r"nodes\.student\.method\.chanel_loss: unknown key 'chanel_loss'. Did you mean 'channel_loss'"):
        experiment(tmp_path, student={"model": "resnet8", "teacher": "probes",
                                      "method": {"name": "mtkd_ssr", "chanel_loss": "fd"}})


@pytest.mark.parametrize("teacher,student,extra", [
    # heads: GAP + FC(C_i -> 100) on stages 1-3 of a 4-stage ResNet (64, 128, 256 channels)
    ("cifar_resnet34", "cifar_resnet18", (64 + 128 + 256) * 100 + 300),
    ("seresnet34", "cifar_resnet18", (64 + 128 + 256) * 100 + 300),
    # ResNet101-34: 1x1 connectors with bias from 64/128/256/512 to the bottleneck's 256/512/1024/2048 channels
    ("cifar_resnet101", "cifar_resnet34", (64 + 128 + 256) * 100 + 300
     + sum(c * 4 * c + 4 * c for c in (64, 128, 256, 512))),
])
def test_training_network_counts_of_the_paper_pairs(teacher, student, extra):
    with torch.device("meta"):
        t = models.create(teacher, 100)
        d = distiller(student, teacher=WithStageHeads(t, StageHeads(t.stage_channels[:-1], 100)), classes=100)
    plain = models.count_parameters(models.create(student, 100))
    assert models.count_parameters(d.student) == plain, "the exported student is the bare model"
    assert models.count_parameters(d) == plain + extra
