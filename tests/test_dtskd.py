"""DTSKD: its two loss terms and beta schedules against float64 hand computations, the Mixed Fusion
Module's shapes and fusion modes, the historical targets across epochs (one process, and two gloo DDP
ranks whose samples move between them), checkpoints that keep the history, the official parameter
counts, export of the backbone alone, and every variant's config."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raykd import methods, models
from raykd.config import build_experiment
from raykd.data.image_set import ImageSet
from raykd.data.loader import DeviceLoader
from raykd.engine import RunContext, fit, load_student
from raykd.errors import CheckpointError, ConfigError
from raykd.losses import historical_loss, kl_to_target, structural_loss
from raykd.methods.base import MethodContext
from raykd.methods.dtskd import beta_at
from raykd.methods.history import HistoryMemory
from raykd.methods.mfm import MixedFusionBranches
from raykd.pipeline import make_plan


def np_kl(logits, target, T, eps=1e-7):
    """The official KL_Loss / KL_Loss2 in float64: T^2 sum q'(log q' - log softmax(s/T)) / B, q' = q + eps."""
    z = np.asarray(logits, dtype=np.float64) / T
    log_p = z - z.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    q = np.asarray(target, dtype=np.float64) + eps
    return T * T * (q * (np.log(q) - log_p)).sum() / z.shape[0]


def np_softmax(z, T=1.0):
    z = np.asarray(z, dtype=np.float64) / T
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kl_to_target_matches_the_official_form(T):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g)
    q = torch.softmax(t, 1)
    assert kl_to_target(s, q, T).item() == pytest.approx(np_kl(s, q, T), rel=1e-6)
    onehot = F.one_hot(torch.arange(6) % 5, 5).float()
    # with a one-hot target the T 1 KL is the cross-entropy, up to the epsilon terms
    assert kl_to_target(s, onehot).item() == pytest.approx(F.cross_entropy(s, torch.arange(6) % 5).item(), abs=1e-4)


def test_structural_loss_sums_backbone_to_branch_kl_at_t4_and_may_detach():
    g = torch.Generator().manual_seed(2)
    backbone = torch.randn(4, 7, generator=g, requires_grad=True)
    branches = [torch.randn(4, 7, generator=g, requires_grad=True) for _ in range(3)]
    expected = sum(np_kl(b.detach(), np_softmax(backbone.detach(), 4.0), 4.0) for b in branches)
    loss = structural_loss(branches, backbone, temperature=4.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert backbone.grad is not None and backbone.grad.abs().sum() > 0, "official: the backbone also learns"
    backbone.grad = None
    structural_loss(branches, backbone, 4.0, detach=True).backward()
    assert backbone.grad is None and all(b.grad is not None for b in branches)


def test_historical_loss_weights_each_head():
    g = torch.Generator().manual_seed(3)
    heads = [torch.randn(5, 4, generator=g) for _ in range(4)]
    targets = [torch.softmax(torch.randn(5, 4, generator=g), 1) for _ in range(4)]
    weights = [3.0, 1.0, 1.0, 1.0]
    expected = sum(w * np_kl(z, q, 1.0) for z, q, w in zip(heads, targets, weights))
    assert historical_loss(heads, targets, weights).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("epoch,expected", [(0, 0.9), (75, 0.45 * (1 + math.cos(math.pi / 4))), (150, 0.45),
                                            (299, 0.45 * (1 + math.cos(math.pi * 299 / 300)))])
def test_cosine_beta_goes_from_max_to_min_as_the_official_code(epoch, expected):
    assert beta_at("cosine", epoch, 300, 0.9, 0.0) == pytest.approx(expected, abs=1e-12)


def test_linear_and_fixed_beta():
    # linear: PS-KD's 1 - alpha_T (t + 1) / T with alpha_T 0.8 is beta_max 1 -> beta_min 0.2
    for epoch in (0, 10, 99):
        assert beta_at("linear", epoch, 100, 1.0, 0.2) == pytest.approx(1 - 0.8 * (epoch + 1) / 100)
    assert beta_at("linear", 99, 100, 0.9, 0.1) == pytest.approx(0.1)
    assert {beta_at("fixed", e, 300, 0.6, 0.0) for e in (0, 150, 299)} == {0.6}
    assert beta_at("cosine", 7, 10, 1.0, 1.0) == 1.0  # structural only: the target is the label throughout


# --- the Mixed Fusion Module ------------------------------------------------------------------------------

STAGES = (8, 16, 32, 64)


def features(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, c, 16 // 2 ** i, 16 // 2 ** i, generator=g) for i, c in enumerate(STAGES)]


@pytest.mark.parametrize("mode", ["mixed", "add", "concat", "none"])
def test_mfm_output_shapes_per_mode(mode):
    net = MixedFusionBranches(STAGES, 10, mode=mode).eval()
    out = net(features())
    assert list(out) == [1, 2, 3]
    assert all(z.shape == (3, 10) for z in out.values())
    fused = net.fused(features())
    assert all(f.shape == (3, 64) for f in fused.values()), "constant width: the last stage's channels"
    assert hasattr(net, "fuse") == (mode in ("mixed", "concat")) and hasattr(net, "topdown") == (mode != "none")


def test_mfm_fusion_arithmetic_per_mode():
    feats = features()
    top = feats[-1].mean((2, 3))
    for mode in ("mixed", "add", "concat"):
        net = MixedFusionBranches(STAGES, 10, mode=mode).eval()
        lat = net.laterals["3"](feats[2])
        up = net.topdown["3"](top)
        expected = {"mixed": lambda: net.fuse["3"](torch.cat([lat + up, up], 1)),
                    "concat": lambda: net.fuse["3"](torch.cat([lat, up], 1)),
                    "add": lambda: lat + up}[mode]()
        assert torch.allclose(net.fused(feats)[3], expected, atol=1e-6), mode
    # the lateral pools first (official ResNet/VGG); ShuffleNetV2's convolves at full resolution first
    pool_first = MixedFusionBranches(STAGES, 10).eval().laterals["1"]
    assert pool_first.full is None and torch.allclose(pool_first(feats[0]), pool_first.vec(feats[0].mean((2, 3))))
    conv_first = MixedFusionBranches(STAGES, 10, lateral="conv_pool_conv").eval().laterals["1"]
    assert conv_first.full[0].kernel_size == (1, 1) and conv_first.vec is not None


def test_top_down_path_carries_deep_information_except_in_mode_none():
    feats, changed = features(), features()
    changed[-1] = changed[-1] + 1.0  # only the deepest stage differs
    for mode, moves in (("mixed", True), ("add", True), ("concat", True), ("none", False)):
        net = MixedFusionBranches(STAGES, 10, mode=mode).eval()
        a, b = net(feats)[1], net(changed)[1]
        assert (not torch.allclose(a, b)) == moves, mode


def test_pyramid_width_and_branch_subsets():
    net = MixedFusionBranches(STAGES, 10, width="pyramid")
    assert net.widths == {1: 16, 2: 32, 3: 64, 4: 64}, "F_b has the channels of stage b+1 (the paper's text)"
    assert [f.shape[1] for f in net.fused(features()).values()] == [64, 32, 16]
    only_first = MixedFusionBranches(STAGES, 10, mode="none", branches=[1])
    assert list(only_first(features())) == [1] and set(only_first.laterals) == {"1"}
    deep_only = MixedFusionBranches(STAGES, 10, branches=[3])
    assert set(deep_only.fcs) == {"3"} and set(deep_only.fuse) == {"3"}
    with pytest.raises(ValueError, match=r"branches must lie in 1\.\.3"):
        MixedFusionBranches(STAGES, 10, branches=[4])


# --- parameter counts ----------------------------------------------------------------------------------

# The training-time network (backbone + branches) at 100 classes, as the official code builds it:
# models/resnet_dtskd.py resnet18_dtskd, models/vgg_dtskd.py vgg16_dtskd, models/shufflenetv2_dtskd.py
# shufflenetv2 and models/resnext2_dtskd.py resnext18_dtskd of github.com/zhengli97/DTSKD (commit f546b47),
# each instantiated with num_classes=100 and its parameters counted (sum of p.numel()).
OFFICIAL_TRAINING_COUNTS = {
    "cifar_resnet18": 13_971_920, "vgg16_dtskd": 18_280_912, "shufflev2_dtskd": 15_107_372,
    "resnext18_dtskd": 24_961_232,
}


def distiller(model="resnet8", classes=10, n=32, epochs=10, **cfg):
    torch.manual_seed(0)
    d = methods.build_distiller(methods.validate_method_config({"name": "dtskd", **cfg}),
                                models.create(model, classes), None)
    d.setup(MethodContext(num_classes=classes, train_labels=torch.arange(n) % classes, image_shape=(3, 32, 32),
                          epochs=epochs, steps_per_epoch=4))
    return d


@pytest.mark.parametrize("model", sorted(OFFICIAL_TRAINING_COUNTS))
def test_training_network_has_the_official_parameter_count(model):
    d = distiller(model, classes=100)
    assert models.count_parameters(d) == OFFICIAL_TRAINING_COUNTS[model]
    assert models.count_parameters(d.student) == models.count_parameters(models.create(model, 100))


def test_resnet18_branches_by_hand():
    # three laterals (pool, 1x1 conv C_b -> 512, BN), three top-down blocks (512 -> 512, BN), three fuse
    # convs (1024 -> 512, BN) and three FCs (512 -> 100): 2,751,788 on top of ResNet-18's 11,220,132
    lateral = sum(c * 512 + 2 * 512 for c in (64, 128, 256))
    topdown = 3 * (512 * 512 + 2 * 512)
    fuse = 3 * (1024 * 512 + 2 * 512)
    fcs = 3 * (512 * 100 + 100)
    assert lateral + topdown + fuse + fcs == 2_751_788
    d = distiller("cifar_resnet18", classes=100)
    assert models.count_parameters(d.branch_net) == 2_751_788


# --- historical targets ---------------------------------------------------------------------------------

def recording(d):
    """Wrap d.targets to keep what it returns."""
    seen = []
    original = d.targets

    def wrapped(batch, heads):
        out = original(batch, heads)
        seen.append(out.detach().clone())
        return out

    d.targets = wrapped
    return seen


def test_targets_of_the_next_epoch_are_the_stored_predictions():
    d = distiller(history_dtype="float32", beta_max=0.9, beta_min=0.0)
    targets = recording(d)
    g = torch.Generator().manual_seed(0)
    b = {"image": torch.randn(8, 3, 32, 32, generator=g), "label": torch.arange(8) % 10, "index": torch.arange(8) * 3}
    onehot = F.one_hot(b["label"], 10).float()
    d.train()
    d.start_epoch(0)
    d(b)
    assert torch.equal(targets[0], onehot.expand(3, 8, 10)), "epoch 1: nothing stored yet, the label alone"
    with torch.no_grad():
        out = d.student(b["image"])  # train mode: the same batch statistics, so the same logits
        heads = [out.logits, *d.branch_net(out.features).values()]
    probs = torch.stack([h.softmax(1) for h in heads])
    stored, seen = d.history.exchange(b["index"], probs, write=False)
    assert seen.all() and torch.allclose(stored, probs, atol=1e-6), "every head's softmax is stored per sample"
    assert not d.history.seen[torch.tensor([1, 2, 4])].any(), "only the batch's samples are written"
    d.start_epoch(1)
    d(b)
    beta = beta_at("cosine", 1, 10, 0.9, 0.0)
    assert torch.allclose(targets[1], beta * onehot + (1 - beta) * probs, atol=1e-6)
    assert (targets[1] - targets[0]).abs().max() > 1e-3, "the targets change once there is a history"


def test_history_update_false_keeps_the_label_as_every_target():
    d = distiller(history_update=False, beta_max=0.9, beta_min=0.0)
    assert d.history is None and d.result_metrics() == {"history/bytes": 0.0}
    targets = recording(d)
    b = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([1, 2, 3, 4]), "index": torch.arange(4)}
    for epoch in range(3):
        d.start_epoch(epoch)
        d(b)
    assert all(torch.equal(t, F.one_hot(b["label"], 10).float().expand(3, 4, 10)) for t in targets)


def test_variants_select_their_terms():
    b = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([1, 2, 3, 4]), "index": torch.arange(4)}
    assert set(distiller()(b)[1]) == {"historical", "structural"}
    assert set(distiller(alpha1=1.0, alpha2=0.0)(b)[1]) == {"historical"}, "historical only (Table 6)"
    structural_only = distiller(beta_max=1.0, beta_min=1.0)
    logits, losses = structural_only(b)
    with torch.no_grad():
        out = structural_only.student(b["image"])
        heads = [out.logits, *structural_only.branch_net(out.features).values()]
    ce = sum(w * F.cross_entropy(h, b["label"]) for h, w in zip(heads, [3, 1, 1]))
    assert losses["historical"].item() == pytest.approx(0.2 * ce.item(), rel=1e-3), "beta 1: weighted CE"
    with pytest.raises(ConfigError, match=r"^method: beta_min \(0.6\) is above beta_max \(0.5\); beta decays from max to min\.$"):
        methods.validate_method_config({"name": "dtskd", "beta_max": 0.5, "beta_min": 0.6})
    with pytest.raises(ConfigError, match="both 0"):
        methods.validate_method_config({"name": "dtskd", "alpha1": 0, "alpha2": 0})
    with pytest.raises(ConfigError, match="history_topk: 20 is more than the 10 classes"):
        distiller(history_topk=20)


def test_shufflenet_laterals_follow_the_official_code_unless_chosen():
    assert distiller("shufflev2_dtskd", classes=100).branch_net.laterals["1"].full is not None
    assert distiller("shufflev2_dtskd", classes=100, lateral="pool_conv").branch_net.laterals["1"].full is None
    assert distiller("cifar_resnet18", classes=100).branch_net.laterals["1"].full is None


# --- the history's storage --------------------------------------------------------------------------------

def test_history_storage_fp16_and_topk():
    probs = torch.softmax(torch.randn(2, 5, 12) * 2, -1)
    index = torch.tensor([0, 3, 4, 7, 9])
    dense = HistoryMemory(10, 2, 12, torch.float16)
    dense.exchange(index, probs)
    stored, seen = dense.exchange(index, probs, write=False)
    assert seen.all() and torch.allclose(stored, probs, atol=1e-3) and dense.values.dtype == torch.float16
    top = HistoryMemory(10, 2, 12, torch.float16, topk=3)
    top.exchange(index, probs)
    stored, _ = top.exchange(index, probs, write=False)
    k = probs.topk(3, -1)
    expected = torch.zeros_like(probs).scatter_(-1, k.indices, k.values)
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(stored, expected, atol=2e-3), "the k largest probabilities, renormalised"
    assert (stored > 0).sum(-1).eq(3).all()
    # bytes per sample: heads x (classes x 4 | classes x 2 | k x (2 + 2)) + the seen flag
    assert HistoryMemory(10, 4, 1000, torch.float32).bytes_per_sample == 4 * 1000 * 4 + 1
    assert HistoryMemory(10, 4, 1000, torch.float16).bytes_per_sample == 4 * 1000 * 2 + 1
    assert HistoryMemory(10, 4, 1000, torch.float16, topk=10).bytes_per_sample == 4 * 10 * 4 + 1


def test_history_shards_reload_on_another_number_of_ranks():
    probs = torch.softmax(torch.randn(2, 10, 6), -1)
    shards = []
    for rank in range(3):  # a 3-rank run: rank r held samples r, r + 3, ...
        mem = HistoryMemory(10, 2, 6, torch.float32, rank=rank, world=3)
        mine = torch.arange(rank, 10, 3)
        mem._store(mine // 3, probs[:, mine])
        assert mem.values.shape[1] == len(mine), "each rank holds only its share"
        shards.append(mem.state_dict())
    for world in (1, 2):
        for rank in range(world):
            mem = HistoryMemory(10, 2, 6, torch.float32, rank=rank, world=world)
            mem.load_shards(lambda k: shards[k], 3)
            mine = torch.arange(rank, 10, world)
            assert mem.seen.all() and torch.equal(mem.values, probs[:, mine])


# --- two DDP ranks ---------------------------------------------------------------------------------------

def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    images = torch.randint(0, 255, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(24) % 4
    loader = DeviceLoader(ImageSet(images, labels), 4, "cpu", (0.5,) * 3, (0.25,) * 3, train=True, seed=3,
                          rank=rank, world_size=world)
    d = methods.build_distiller(methods.validate_method_config(
        {"name": "dtskd", "history_dtype": "float32", "beta_max": 0.9, "beta_min": 0.0}), models.create("resnet8", 4), None)
    d.setup(MethodContext(num_classes=4, train_labels=labels, image_shape=(3, 32, 32), epochs=4, steps_per_epoch=3))
    d.train()
    records, written = [], []
    exchange = d.history.exchange

    def spy(index, probs, write=True):
        written.append((index.clone(), probs.clone()))
        return exchange(index, probs, write)

    d.history.exchange = spy
    targets = recording(d)
    for epoch in range(2):
        loader.set_epoch(epoch)
        d.start_epoch(epoch)
        for batch in loader:
            d(batch)
            records.append((epoch, batch["index"].clone(), batch["label"].clone()))
    torch.save({"records": records, "targets": targets, "written": written, "rows": d.history.values.shape[1],
                "beta": beta_at("cosine", 1, 4, 0.9, 0.0)}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_ranks_target_each_sample_with_its_own_previous_prediction(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    runs = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["rows"] for r in runs] == [12, 12], "each rank holds half the samples' rows"
    stored, rank_of = {}, {}
    for rank, run in enumerate(runs):
        for (epoch, index, _), (_, probs) in zip(run["records"], run["written"]):
            if epoch == 0:
                for j, i in enumerate(index.tolist()):
                    stored[i], rank_of[i] = probs[:, j], rank
    moved = checked = 0
    for rank, run in enumerate(runs):
        for (epoch, index, labels), target in zip(run["records"], run["targets"]):
            onehot = F.one_hot(labels, 4).float()
            if epoch == 0:
                assert torch.equal(target, onehot.expand_as(target))
                continue
            for j, i in enumerate(index.tolist()):
                expected = run["beta"] * onehot[j] + (1 - run["beta"]) * stored[i]
                assert torch.allclose(target[:, j], expected, atol=1e-6), (rank, i)
                moved += rank_of[i] != rank
                checked += 1
    assert checked == 24 and moved > 0, "samples moved between ranks and still got their own history"


# --- the engine: export, per-branch accuracy, checkpoints ------------------------------------------------

def tiny(tmp_path, epochs=2, **method):
    raw = {"name": "dt", "storage": str(tmp_path / "runs"),
           "data": {"name": "digits", "batch_size": 32, "train_limit": 128, "augment": {"crop_padding": 2, "flip": False}},
           "train": {"epochs": epochs, "optimizer": {"lr": 0.05}},
           "nodes": {"student": {"model": "resnet8", "method": {"name": "dtskd", **method}}}}
    return make_plan(build_experiment(raw))["student"]


def test_node_exports_the_backbone_alone_and_reports_each_branch(tmp_path):
    pn = tiny(tmp_path)
    seen = {}
    result = fit(pn.node, RunContext(out_dir=pn.dir, log=lambda *_: None, on_epoch=lambda e, m: seen.update(m)))
    student, meta = load_student(pn.dir / "final.pt")
    plain = models.create("resnet8", 10)
    assert set(student.state_dict()) == set(plain.state_dict())
    assert models.count_parameters(student) == models.count_parameters(plain) == result["params"]
    for b in (1, 2):  # resnet8 has three stages: two branches
        assert 0 <= result[f"test/branch{b}_top1"] <= 100 and f"val/branch{b}_top1" in seen
    assert result["history/bytes"] == 128 * (3 * 10 * 2 + 1), "fp16 rows of 3 heads x 10 classes + a flag"
    assert set(k for k in seen if k.startswith("train/")) == {"train/loss", "train/top1", "train/historical",
                                                              "train/structural"}


class Stop(Exception):
    pass


def stop_after(n):
    def on_epoch(epoch, metrics):
        if epoch == n:
            raise Stop
    return on_epoch


def test_resume_restores_the_history(tmp_path):
    pn = tiny(tmp_path, epochs=3)
    fit(pn.node, RunContext(out_dir=tmp_path / "a", log=lambda *_: None))
    with pytest.raises(Stop):
        fit(pn.node, RunContext(out_dir=tmp_path / "b", log=lambda *_: None, on_epoch=stop_after(2)))
    assert sorted(p.name for p in (tmp_path / "b" / "sharded").iterdir()) == ["e2-r0of1.pt"], "older shards pruned"
    fit(pn.node, RunContext(out_dir=tmp_path / "b", log=lambda *_: None))
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed = uninterrupted: the history came back"


def test_resume_without_its_history_shard_names_the_file(tmp_path):
    pn = tiny(tmp_path, epochs=3)
    with pytest.raises(Stop):
        fit(pn.node, RunContext(out_dir=tmp_path / "b", log=lambda *_: None, on_epoch=stop_after(1)))
    (tmp_path / "b" / "sharded" / "e1-r0of1.pt").unlink()
    with pytest.raises(CheckpointError, match=r"e1-r0of1\.pt is missing"):
        fit(pn.node, RunContext(out_dir=tmp_path / "b", log=lambda *_: None))


def test_config_errors_name_the_node_and_field(tmp_path):
    raw = {"name": "dt", "storage": str(tmp_path), "data": {"name": "digits"},
           "nodes": {"student": {"model": "resnet8", "method": {"name": "dtskd", "branches": [3]}}}}
    with pytest.raises(ConfigError, match=r"nodes\.student\.method: branches: \[3\] out of range; this backbone "
                                          r"has 2 auxiliary branches \(1\.\.2\)"):
        build_experiment(raw)
    raw["nodes"]["student"]["method"] = {"name": "dtskd", "mfm": "fpn"}
    with pytest.raises(ConfigError, match=r"nodes\.student\.method\.mfm: .*'mixed', 'add', 'concat' or 'none'"):
        build_experiment(raw)
    raw["nodes"]["student"]["method"] = {"name": "dtskd", "beta_mx": 0.9}
    with pytest.raises(ConfigError, match=r"nodes\.student\.method\.beta_mx: unknown key 'beta_mx'. Did you mean 'beta_max'"):
        build_experiment(raw)


def test_no_history_is_kept_where_every_target_is_the_label():
    assert distiller(beta_max=1.0, beta_min=1.0).history is None, "structural only (Table 6)"
    assert distiller(decay="fixed", beta_max=1.0).history is None
    assert distiller(alpha1=0.0, alpha2=1.0).history is None, "no historical term"
    assert distiller(decay="fixed", beta_max=0.7).history is not None
