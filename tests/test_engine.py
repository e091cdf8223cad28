"""One run: resume equivalence, the non-finite stop, the frozen teacher, atomic checkpoints."""

from typing import Literal

import pytest
import torch
import torch.nn.functional as F

from raykd import models
from raykd.config import build_experiment
from raykd.engine import RunContext, fit, load_student
from raykd.engine import checkpoint as ckpt
from raykd.engine.step_stats import StepStats
from raykd.errors import NonFiniteLossError
from raykd.methods import Distiller, MethodConfig, build_distiller, register_method, validate_method_config


class NanAtConfig(MethodConfig):
    name: Literal["test_nan_at"] = "test_nan_at"
    step: int = 3


@register_method
class NanAt(Distiller):
    """CE plus a 'boom' term that turns NaN at a given step."""

    name = "test_nan_at"
    Config = NanAtConfig

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        self.calls = 0

    def forward(self, batch):
        out = self.student(batch["image"])
        boom = out.logits.sum() * 0.0 + (float("nan") if self.calls == self.cfg.step else 0.0)
        self.calls += 1
        return out.logits, {"ce": F.cross_entropy(out.logits, batch["label"]), "boom": boom}


class Stop(Exception):
    pass


def quiet(*_):
    pass


def test_resume_gives_identical_weights_and_step(tiny_raw, tmp_path):
    node = build_experiment(tiny_raw, ["train.epochs=3"]).nodes["vanilla"]
    straight = fit(node, RunContext(out_dir=tmp_path / "a", log=quiet))

    def interrupt(epoch, metrics):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(node, RunContext(out_dir=tmp_path / "b", on_epoch=interrupt, log=quiet))
    assert ckpt.load(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    logs = []
    resumed = fit(node, RunContext(out_dir=tmp_path / "b", log=logs.append))
    assert any("resuming" in line and "after epoch 2/3" in line for line in logs)
    a = ckpt.load(tmp_path / "a" / "checkpoint.pt")
    b = ckpt.load(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 3 * (256 // 64)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed["test/top1"] == straight["test/top1"]
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]


def test_non_finite_loss_stops_with_step_and_term(tiny_raw, tmp_path):
    tiny_raw["nodes"]["vanilla"]["method"] = {"name": "test_nan_at", "step": 6}
    node = build_experiment(tiny_raw).nodes["vanilla"]
    with pytest.raises(NonFiniteLossError) as e:
        fit(node, RunContext(out_dir=tmp_path, log=quiet))
    msg = str(e.value)
    assert "step 6 (epoch 2)" in msg and "term(s) boom" in msg and "ce=" in msg
    state = ckpt.load(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1, "the last good checkpoint (epoch 1) is kept"
    assert not (tmp_path / "final.pt").exists()


def test_the_finite_check_names_the_first_bad_step_of_a_read_back_window():
    """Rows are read back every few steps: a NaN in the middle of a window (and the NaNs that follow it once the
    weights are NaN) still names the step it started at, and its term."""
    stats = StepStats(torch.device("cpu"), every=8)
    nan = torch.tensor(float("nan"))
    for step in range(10, 13):
        stats.add(step, torch.tensor(1.0), {"ce": torch.tensor(1.0), "kd": torch.tensor(0.0)}, torch.tensor(3), 4,
                  epoch=1, tag="kd")
    stats.add(13, nan, {"ce": torch.tensor(2.0), "kd": nan}, torch.tensor(0), 4, epoch=1, tag="kd")
    stats.add(14, nan, {"ce": nan, "kd": nan}, torch.tensor(0), 4, epoch=1, tag="kd")
    with pytest.raises(NonFiniteLossError, match=r"\[kd\] loss became non-finite at step 13 \(epoch 2\): "
                                                 r"term\(s\) kd \(ce=2, kd=nan\)"):
        stats.flush(epoch=1, tag="kd")


def test_step_stats_are_the_batch_weighted_epoch_means():
    stats = StepStats(torch.device("cpu"), every=2)  # 5 steps: two full windows and one flushed at the end
    terms = [(0.5, 2.0), (1.0, 1.0), (1.5, 0.5), (2.0, 0.0), (4.0, 1.0)]
    sizes, correct = [4, 4, 4, 4, 2], [1, 2, 3, 4, 2]
    for i, ((ce, kd), n, c) in enumerate(zip(terms, sizes, correct)):
        stats.add(i, torch.tensor(ce + kd), {"ce": torch.tensor(ce), "kd": torch.tensor(kd)}, torch.tensor(c), n,
                  epoch=0, tag="t")
    stats.flush(epoch=0, tag="t")
    m = stats.metrics()
    ce = sum(t[0] * n for t, n in zip(terms, sizes)) / 18
    kd = sum(t[1] * n for t, n in zip(terms, sizes)) / 18
    assert m == pytest.approx({"train/ce": ce, "train/kd": kd, "train/loss": ce + kd, "train/top1": 100 * 12 / 18})
    assert list(m) == ["train/ce", "train/kd", "train/loss", "train/top1"] and stats.seen == 18


def test_a_training_step_reads_nothing_back_from_the_device(tiny_raw, tmp_path):
    """Host reads of tensor values (item, bool, float: aten._local_scalar_dense, what waits on a GPU) do not grow
    with the number of steps: the step itself reads nothing; the rows come back in one transfer per window."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                CountReads.reads += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for steps in (4, 16):
        node = build_experiment(tiny_raw, ["train.epochs=1", f"data.train_limit={64 * steps}"]).nodes["kd"]
        teacher = tmp_path / "teacher"
        if not (teacher / "final.pt").exists():
            fit(build_experiment(tiny_raw, ["train.epochs=1"]).nodes["teacher"], RunContext(out_dir=teacher, log=quiet))
        CountReads.reads = 0
        with CountReads():
            result = fit(node, RunContext(out_dir=tmp_path / str(steps), teacher_path=teacher / "final.pt", log=quiet))
        assert result["steps_per_epoch"] == steps
        counts[steps] = CountReads.reads
    assert counts[4] == counts[16], counts


def test_epoch_metrics_name_every_loss_term(tiny_raw, tmp_path):
    exp = build_experiment(tiny_raw, ["train.epochs=1"])
    fit(exp.nodes["teacher"], RunContext(out_dir=tmp_path / "t", log=quiet))
    seen = {}
    result = fit(exp.nodes["kd"], RunContext(out_dir=tmp_path / "k", teacher_path=tmp_path / "t" / "final.pt",
                                             on_epoch=lambda e, m: seen.update({e: m}), log=quiet))
    m = seen[1]
    for key in ("train/ce", "train/kd", "train/loss", "train/top1", "val/top1", "val/top5", "lr",
                "images_per_s", "epoch_seconds"):
        assert key in m, key
    assert m["train/loss"] == pytest.approx(m["train/ce"] + m["train/kd"], rel=1e-5)
    assert 0 <= result["test/top1"] <= 100 and result["best/epoch"] == 1
    model, meta = load_student(tmp_path / "k" / "final.pt")
    assert meta["model"] == "resnet8" and meta["num_classes"] == 10 and "test/top1" in meta["metrics"]


def test_teacher_is_frozen_and_outside_the_state_dict():
    torch.manual_seed(0)
    teacher = models.create("resnet8", 10)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = build_distiller(validate_method_config({"name": "kd"}), models.create("resnet8", 10), teacher)
    distiller.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher") for k in distiller.state_dict())
    opt = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.1)
    batch = {"image": torch.randn(8, 3, 32, 32), "label": torch.arange(8) % 10}
    _, losses = distiller(batch)
    sum(losses.values()).backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher {k} changed (BN stats included)"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.student.parameters())


def test_save_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"v": torch.tensor(1)}, path)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        ckpt.save_atomic({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"], "no temp file left behind"


def test_batch_larger_than_train_split_is_a_clear_error(tiny_raw, tmp_path):
    node = build_experiment(tiny_raw, ["data.batch_size=512"]).nodes["vanilla"]
    from raykd.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size \\(512\\) is larger than the training split"):
        fit(node, RunContext(out_dir=tmp_path, log=quiet))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train(tiny_raw, tmp_path, amp):
    exp = build_experiment(tiny_raw, ["train.epochs=1", f"train.amp={amp}", "train.channels_last=true",
                                      "train.grad_clip=5.0"])
    fit(exp.nodes["teacher"], RunContext(out_dir=tmp_path / "t", log=quiet))
    result = fit(exp.nodes["kd"], RunContext(out_dir=tmp_path / "k", teacher_path=tmp_path / "t" / "final.pt", log=quiet))
    assert result["test/top1"] >= 0 and result["steps_per_epoch"] == 4
    model, _ = load_student(tmp_path / "k" / "final.pt")
    assert all(p.dtype == torch.float32 for p in model.parameters()), "weights stay float32 under autocast"


def test_live_progress_line_redraws_and_clears(capsys):
    from raykd.engine.trainer import _LiveLine

    line = _LiveLine("[kd] epoch 2/5", steps=10)
    line.last -= 1.0  # pretend half a second has passed
    line.update(4, 0.25)
    line.update(5, 0.2)  # too soon: not redrawn
    line.clear()
    out = capsys.readouterr().out
    assert out.startswith("\r[kd] epoch 2/5 [#########") and "4/10  loss 0.2500" in out
    assert "5/10" not in out and out.endswith("\r\033[K")
