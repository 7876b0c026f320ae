"""Tests for the focal form of seg/losses/bce.py (against torchvision's sigmoid_focal_loss) and for the sum of loss
terms in seg/losses/criterion.py (weights, WeightSums, defaults, parameters passed through), and the config's checks
of loss.terms."""

import numpy as np
import pytest
import torch
from conftest import loss_config
from torchvision.ops import sigmoid_focal_loss

from seg.config import ConfigError, MaskSpec, load_config, mask_spec
from seg.config.schema import LossTerm
from seg.data.counts import MaskCounts
from seg.losses import Criterion, lovasz_hinge, soft_dice_loss, tversky_loss, weighted_bce
from seg.weighting.registry import build_strategy

SYNTHETIC = "configs/synthetic.yaml"
SPEC = MaskSpec("multilabel", ("a", "b", "c"))
# made-up counts: 10, 40, 5 positives of 100 valid pixels -> per_channel pos_weight 90/10, 60/40, 95/5
COUNTS = MaskCounts(3, positive_pixels=np.array([10, 40, 5]), valid_pixels=100, all_zero_pixels=50)
PER_CHANNEL = torch.tensor([9.0, 1.5, 19.0]).view(3, 1, 1)


def strategy(weighting="per_channel"):
    return build_strategy(loss_config(weighting), COUNTS, SPEC)


def masked_mean(elementwise, valid):
    """Mean over valid elements (pixels x channels), float64."""
    mask = valid.double().expand_as(elementwise)
    return ((elementwise.double() * mask).sum() / mask.sum()).item()


@pytest.fixture
def batch(logits_batch):
    return logits_batch


def same_sums(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.as_tuple(), b.as_tuple(), strict=True))


# ------------------------------------------------------------------------------ focal


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_focal_matches_torchvision(batch, gamma):
    x, y, valid = batch
    loss, _ = weighted_bce(x, y, valid, None, gamma=gamma)
    expected = sigmoid_focal_loss(x.double(), y.double(), alpha=-1, gamma=gamma, reduction="none")
    assert loss.item() == pytest.approx(masked_mean(expected, valid), rel=1e-5)
    # soft labels: torchvision's p_t = p y + (1-p)(1-y) covers them too
    y_soft = torch.rand(y.shape, generator=torch.Generator().manual_seed(4))
    loss, _ = weighted_bce(x, y_soft, valid, None, gamma=gamma)
    expected = sigmoid_focal_loss(x.double(), y_soft.double(), alpha=-1, gamma=gamma, reduction="none")
    assert loss.item() == pytest.approx(masked_mean(expected, valid), rel=1e-5)


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_focal_gradient_matches_torchvision(batch, gamma):
    x, y, valid = batch
    y = torch.where(valid, y, torch.rand(y.shape, generator=torch.Generator().manual_seed(5)))  # some soft labels
    ours, theirs = x.clone().requires_grad_(), x.double().requires_grad_()
    weighted_bce(ours, y, valid, None, gamma=gamma)[0].backward()
    mask = valid.double().expand_as(theirs)
    elementwise = sigmoid_focal_loss(theirs, y.double(), alpha=-1, gamma=gamma, reduction="none")
    ((elementwise * mask).sum() / mask.sum()).backward()
    torch.testing.assert_close(ours.grad, theirs.grad.float(), rtol=1e-4, atol=1e-7)


def test_focal_is_smaller_than_bce_and_gamma_zero_is_bce(batch):
    x, y, valid = batch
    bce, bce_sums = weighted_bce(x, y, valid, PER_CHANNEL)
    focal0, focal0_sums = weighted_bce(x, y, valid, PER_CHANNEL, gamma=0.0)
    assert torch.equal(bce, focal0) and same_sums(bce_sums, focal0_sums)
    assert weighted_bce(x, y, valid, PER_CHANNEL, gamma=2.0)[0].item() < 0.8 * bce.item()  # easy pixels count less
    expected = sigmoid_focal_loss(x.double(), y.double(), alpha=-1, gamma=0, reduction="none")
    assert weighted_bce(x, y, valid)[0].item() == pytest.approx(masked_mean(expected, valid), rel=1e-5)


def test_focal_with_the_strategy_weight(batch):
    """alpha null: the strategy's pos_weight weighs the positive term, then the modulating factor: by hand."""
    x, y, valid = batch
    terms = [LossTerm(name="focal")]  # gamma 2 by default
    loss, sums, weight = Criterion(strategy(), "pos_weight", False, terms)(x, {"target": y, "valid": valid})
    torch.testing.assert_close(weight, PER_CHANNEL)
    p, yd = torch.sigmoid(x.double()), y.double()
    q = PER_CHANNEL.double()
    elementwise = -(q * yd * torch.log(p) + (1 - yd) * torch.log(1 - p)) * (1 - (p * yd + (1 - p) * (1 - yd))) ** 2
    assert loss.item() == pytest.approx(masked_mean(elementwise, valid), rel=1e-5)
    torch.testing.assert_close(sums.effective_pos_weight(), PER_CHANNEL.view(3).double())


@pytest.mark.parametrize("normalize", [False, True])
def test_focal_fixed_alpha_matches_torchvision(batch, normalize):
    x, y, valid = batch
    terms = [LossTerm(name="focal", gamma=2.0, alpha=0.25)]
    loss, sums, weight = Criterion(strategy("none"), "pos_weight", normalize, terms)(x, {"target": y, "valid": valid})
    assert weight is None
    elementwise = sigmoid_focal_loss(x.double(), y.double(), alpha=0.25, gamma=2, reduction="none")
    if normalize:  # divided by the applied weights: 0.25 on positives, 0.75 on negatives
        alpha_t = (0.25 * y + 0.75 * (1 - y)).double() * valid.double()
        expected = (elementwise * valid.double()).sum().item() / alpha_t.sum().item()
    else:
        expected = masked_mean(elementwise, valid)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the WeightSums see alpha: 0.25 on positives over 0.75 on negatives
    torch.testing.assert_close(sums.effective_pos_weight(), torch.full((3,), 1 / 3, dtype=torch.float64))


# ------------------------------------------------------------------------------ sums of terms


@pytest.mark.parametrize("normalize", [False, True])
def test_bce_plus_twice_dice(batch, normalize):
    x, y, valid = batch
    terms = [LossTerm(name="bce", weight=1.0), LossTerm(name="dice", weight=2.0)]
    loss, sums, _ = Criterion(strategy(), "pos_weight", normalize, terms)(x, {"target": y, "valid": valid})
    bce, bce_sums = weighted_bce(x, y, valid, PER_CHANNEL, "pos_weight", normalize)
    dice = soft_dice_loss(x, y, valid, "batch", 1.0)
    assert loss.item() == pytest.approx(bce.item() + 2 * dice.item(), rel=1e-6)
    assert dice.item() > 0.1  # the dice term is not negligible
    assert same_sums(sums, bce_sums)
    torch.testing.assert_close(sums.effective_pos_weight(), PER_CHANNEL.view(3).double())


def test_weight_sums_come_from_the_weighted_term_whatever_its_place(batch):
    x, y, valid = batch
    terms = [LossTerm(name="dice", weight=0.7), LossTerm(name="lovasz", weight=0.5), LossTerm(name="bce", weight=3.0)]
    loss, sums, _ = Criterion(strategy(), "weight", False, terms)(x, {"target": y, "valid": valid})
    bce, bce_sums = weighted_bce(x, y, valid, PER_CHANNEL, "weight")
    expected = 0.7 * soft_dice_loss(x, y, valid) + 0.5 * lovasz_hinge(x, y, valid) + 3.0 * bce
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert same_sums(sums, bce_sums)
    # two weighted terms: the first one's sums (focal's fixed alpha: 0.25 / 0.75), not bce's unit weights
    terms = [LossTerm(name="focal", alpha=0.25), LossTerm(name="bce")]
    _, sums, _ = Criterion(strategy("none"), terms=terms)(x, {"target": y, "valid": valid})
    torch.testing.assert_close(sums.effective_pos_weight(), torch.full((3,), 1 / 3, dtype=torch.float64))
    _, sums, _ = Criterion(strategy("none"), terms=terms[::-1])(x, {"target": y, "valid": valid})
    torch.testing.assert_close(sums.effective_pos_weight(), torch.ones(3, dtype=torch.float64))


def test_unweighted_terms_report_unit_weights(batch):
    x, y, valid = batch
    loss, sums, _ = Criterion(strategy("none"), terms=[LossTerm(name="dice")])(x, {"target": y, "valid": valid})
    assert loss.item() == pytest.approx(soft_dice_loss(x, y, valid).item(), rel=1e-6)
    torch.testing.assert_close(sums.effective_pos_weight(), torch.ones(3, dtype=torch.float64))
    assert sums.mean_applied_weight().item() == 1.0
    positives = (y * valid).sum(dim=(0, 2, 3)).double()
    torch.testing.assert_close(sums.pos_count, positives)
    torch.testing.assert_close(sums.pos_weight_sum, positives)
    torch.testing.assert_close(sums.neg_count, (valid.sum() - positives).double())
    # the unit sums carry no gradient path
    xg = x.clone().requires_grad_()
    _, sums, _ = Criterion(strategy("none"), terms=[LossTerm(name="dice")])(xg, {"target": y, "valid": valid})
    assert not any(t.requires_grad for t in sums.as_tuple())


def test_default_terms_are_bce_alone(batch):
    x, y, valid = batch
    module = Criterion(strategy(), "pos_weight", True)
    assert module.terms == (LossTerm(name="bce", weight=1.0),)
    loss, sums, _ = module(x, {"target": y, "valid": valid})
    bce, bce_sums = weighted_bce(x, y, valid, PER_CHANNEL, "pos_weight", True)
    assert torch.equal(loss, bce) and same_sums(sums, bce_sums)


def test_parameters_reach_the_terms(batch):
    x, y, valid = batch
    terms = [
        LossTerm(name="tversky", alpha=0.6, beta=0.4, gamma=0.75, form="per_image", smooth=0.5),
        LossTerm(name="lovasz", form="per_image", weight=0.25),
        LossTerm(name="dice", form="per_image", smooth=0.0, weight=1.5),
    ]
    loss, _, _ = Criterion(strategy("none"), terms=terms)(x, {"target": y, "valid": valid})
    expected = (
        tversky_loss(x, y, valid, 0.6, 0.4, 0.75, "per_image", 0.5)
        + 0.25 * lovasz_hinge(x, y, valid, "per_image")
        + 1.5 * soft_dice_loss(x, y, valid, "per_image", 0.0)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # and the defaults of LOSS_TERMS otherwise
    loss, _, _ = Criterion(strategy("none"), terms=[LossTerm(name="tversky")])(x, {"target": y, "valid": valid})
    assert loss.item() == pytest.approx(tversky_loss(x, y, valid, 0.3, 0.7, 1.0, "batch", 1.0).item(), rel=1e-6)
    assert LossTerm(name="focal").parameters() == {"gamma": 2.0, "alpha": None}


def test_ignored_pixels_get_no_gradient_from_any_term(batch):
    x, y, valid = batch
    terms = [LossTerm(name=name) for name in ("bce", "dice", "tversky", "lovasz")] + [LossTerm(name="focal")]
    xg = x.clone().requires_grad_()
    loss, _, _ = Criterion(strategy(), terms=terms)(xg, {"target": y, "valid": valid})
    loss.backward()
    ignored = ~valid.expand_as(x)
    assert torch.equal(xg.grad[ignored], torch.zeros(int(ignored.sum())))
    assert xg.grad[~ignored].abs().min() > 0


# ------------------------------------------------------------------------------ the config


def load(*overrides):
    return load_config(SYNTHETIC, list(overrides))


def test_unweighted_terms_refuse_a_weighting():
    with pytest.raises(ConfigError, match="loss.weighting global has no term to weight.*set loss.weighting: none"):
        load("loss.terms=[{name: dice}]", "loss.weighting=global")
    with pytest.raises(ConfigError, match="loss.weighting per_channel has no term to weight"):
        load("loss.terms=[{name: tversky}, {name: lovasz}]", "loss.weighting=per_channel")
    assert load("loss.terms=[{name: dice}]").loss.weighting == "none"
    assert load("loss.terms=[{name: dice}, {name: focal}]", "loss.weighting=global").loss.weighting == "global"


def test_focal_alpha_refuses_a_weighting():
    with pytest.raises(ConfigError, match="focal alpha 0.25 and loss.weighting global both weight positives"):
        load("loss.terms=[{name: focal, alpha: 0.25}]", "loss.weighting=global")
    with pytest.raises(ConfigError, match=r"focal alpha must be in \(0, 1\)"):
        load("loss.terms=[{name: focal, alpha: 1.5}]")
    assert load("loss.terms=[{name: focal, alpha: 0.25}]").loss.terms[0].alpha == 0.25


def test_parameters_a_term_does_not_take_are_refused():
    with pytest.raises(ConfigError, match=r"loss\.terms\.0'.*dice takes form, smooth; gamma does not apply"):
        load("loss.terms=[{name: dice, gamma: 2}]")
    with pytest.raises(ConfigError, match="bce takes no parameter but weight; form does not apply"):
        load("loss.terms=[{name: bce, form: batch}]")
    with pytest.raises(ConfigError, match=r"loss\.terms\.0"):
        load("loss.terms=[{name: dice, form: image}]")
    with pytest.raises(ConfigError, match=r"loss\.terms\.0"):
        load("loss.terms=[{name: dice, weight: 0}]")


def test_duplicate_and_empty_terms_are_refused():
    with pytest.raises(ConfigError, match=r"lists a term twice: \['dice', 'dice'\]"):
        load("loss.terms=[{name: dice}, {name: dice, weight: 2}]")
    with pytest.raises(ConfigError, match="must list at least one term"):
        load("loss.terms=[]")
    with pytest.raises(ConfigError, match=r"loss\.terms\.0"):
        load("loss.terms=[{name: jaccard}]")


def test_terms_from_the_config_build_the_criterion(batch):
    cfg = load("loss.terms=[{name: bce, weight: 1}, {name: dice, weight: 1}]", "loss.weighting=per_channel")
    weights = [term.weight for term in cfg.loss.terms]
    assert weights == [1.0, 1.0] and all(type(w) is float for w in weights)
    assert load().loss.terms == [LossTerm(name="bce", weight=1.0)]  # base.yaml's default
    x, y, valid = batch
    module = Criterion(build_strategy(cfg.loss, COUNTS, mask_spec(cfg)), cfg.loss.apply_as, False, cfg.loss.terms)
    loss, _, _ = module(x, {"target": y, "valid": valid})
    bce, _ = weighted_bce(x, y, valid, PER_CHANNEL, cfg.loss.apply_as)
    assert loss.item() == pytest.approx(bce.item() + soft_dice_loss(x, y, valid).item(), rel=1e-6)


# ------------------------------------------------------------------- DDP: the loss of the global batch

DDP_CASES = [  # (weighting, terms, apply_as, normalize)
    ("per_channel", [{"name": "bce"}], "pos_weight", False),
    ("per_channel", [{"name": "bce"}], "weight", True),
    ("per_batch", [{"name": "focal", "gamma": 2.0}], "pos_weight", False),
    ("none", [{"name": "dice"}, {"name": "bce", "weight": 0.5}], "pos_weight", False),
    ("none", [{"name": "dice", "form": "per_image"}], "pos_weight", False),
    ("none", [{"name": "tversky", "gamma": 0.75}], "pos_weight", False),
    ("none", [{"name": "lovasz", "form": "per_image"}], "pos_weight", False),
]


def ddp_case_batch():
    """4 images; the two halves (one per process) hold different numbers of valid pixels and positives."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 6, 5, generator=g) * 2
    y = (torch.rand(4, 3, 6, 5, generator=g) > 0.7).float()
    y[:, :, 0, 0] = 1.0
    valid = torch.rand(4, 1, 6, 5, generator=g) > 0.1
    valid[2:, :, :2] = False  # the second half has fewer valid pixels
    valid[:, :, 0, 0] = True
    return x, y, valid


def ddp_criterion(case, reduce=None):
    weighting, terms, apply_as, normalize = case
    return Criterion(strategy(weighting), apply_as, normalize, [LossTerm(**t) for t in terms], reduce)


def loss_and_grad(case, x, y, valid, reduce=None):
    x = x.clone().requires_grad_(True)
    loss, _, _ = ddp_criterion(case, reduce)(x, {"target": y, "valid": valid})
    loss.backward()
    return loss.detach(), x.grad


def _ddp_loss_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from seg.distributed import global_sum

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        x, y, valid = ddp_case_batch()
        half = slice(2 * rank, 2 * rank + 2)
        results = [loss_and_grad(case, x[half], y[half], valid[half], global_sum) for case in DDP_CASES]
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_ddp_every_process_has_the_global_batch_loss_and_its_gradient(tmp_path):
    """2 gloo processes, each with half of the batch: the loss on each is the whole batch's, and its
    gradient, once DDP has averaged it over the 2 processes, is the whole batch's gradient."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_loss_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x, y, valid = ddp_case_batch()
    for rank in (0, 1):
        half = slice(2 * rank, 2 * rank + 2)
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for case, (loss, grad) in zip(DDP_CASES, results, strict=True):
            expected_loss, expected_grad = loss_and_grad(case, x, y, valid)
            assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5), case
            assert torch.allclose(grad / 2, expected_grad[half], atol=1e-7, rtol=1e-4), case  # DDP: mean of 2


def test_without_the_reduction_the_mean_of_the_halves_is_not_the_global_loss():
    """What the reduction fixes: with unequal halves, the mean of per-half losses differs (so the test
    above can fail); per_image means over 2 images per half happen to agree."""
    x, y, valid = ddp_case_batch()
    for case in DDP_CASES[:4]:
        halves = [loss_and_grad(case, x[s], y[s], valid[s])[0] for s in (slice(0, 2), slice(2, 4))]
        whole = loss_and_grad(case, x, y, valid)[0]
        assert abs((halves[0] + halves[1]).item() / 2 - whole.item()) > 1e-4, case
