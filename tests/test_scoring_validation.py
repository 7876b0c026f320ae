"""Tests for seg/scoring/validation.py: the val block's keys, batch-size invariance, the three threshold
policies (prior correction undoes an exact shift; tuned finds a known best threshold), the
empty-image false-positive rate, the per-batch update without host synchronisation, and its statistics
worked through in parts bit for bit those of the whole-batch functions."""

import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import adapted_rand_error

from seg.scoring.calibration import calibration_sums
from seg.scoring.metrics import confusion_counts, dice_score
from seg.scoring.policies import POLICIES, TUNED_NOTE
from seg.scoring.thresholds import logit_boundaries, probability_grid, threshold_histograms
from seg.scoring.validation import Evaluator, batch_parts, batch_statistics

NAMES = ["a", "b", "c"]
SCORE_KEYS = {"dice", "iou", "micro", "per_image", "per_channel", "empty_image_fp_rate", "thresholds"}


def random_data(seed, n=9, c=3, h=16, w=16):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, c, h, w, generator=g) < torch.linspace(0.05, 0.3, c).view(1, c, 1, 1)).float()
    target[1] = 0  # an image with no positives in any channel
    logits = torch.randn(n, c, h, w, generator=g) * 1.5 + 3 * target - 1.5
    valid = torch.rand(n, 1, h, w, generator=g) > 0.1
    return logits, target, valid


def evaluate(logits, target, valid, batch_size=4, threshold="0.5", **kwargs):
    evaluator = Evaluator(logits.shape[1], "cpu", **kwargs)
    for i in range(0, logits.shape[0], batch_size):
        evaluator.update(logits[i : i + batch_size], target[i : i + batch_size], valid[i : i + batch_size])
    return evaluator.compute(NAMES[: logits.shape[1]], threshold)


def without_ece(block):
    return {k: v for k, v in block.items() if k != "ece"}


def test_val_block_keys_and_json():
    val = evaluate(*random_data(0), log_q=torch.tensor([1.0, 2.0, 0.5]).view(3, 1, 1))
    assert set(val) == SCORE_KEYS | {"threshold", "empty_policy", "num_images", "by_threshold", "ece"}
    assert set(val["by_threshold"]) == set(POLICIES)
    for name, block in val["by_threshold"].items():
        assert set(block) == SCORE_KEYS | ({"note"} if name == "tuned" else set())
        assert set(block["per_channel"]) == set(NAMES) and set(block["thresholds"]) == set(NAMES)
    assert val["by_threshold"]["tuned"]["note"] == TUNED_NOTE
    assert val["by_threshold"]["0.5"]["thresholds"] == {"a": 0.5, "b": 0.5, "c": 0.5}
    # prior_corrected: probability threshold sigmoid(log q) = q / (1 + q)
    assert val["by_threshold"]["prior_corrected"]["thresholds"]["b"] == pytest.approx(
        math.e**2 / (1 + math.e**2), abs=1e-6
    )
    assert set(val["ece"]) == {
        "bins",
        "raw",
        "prior_corrected",
        "raw_mean",
        "prior_corrected_mean",
        "brier",
        "brier_mean",
    }
    assert val["ece"]["bins"] == 15 and val["num_images"] == 9 and val["empty_policy"] == "nan"
    assert json.loads(json.dumps(val)) == val
    assert {k: val[k] for k in SCORE_KEYS} == val["by_threshold"]["0.5"]


@pytest.mark.parametrize("threshold", POLICIES)
def test_chosen_threshold_fills_the_top_level(threshold):
    val = evaluate(*random_data(1), threshold=threshold, log_q=torch.tensor([1.0, 2.0, 0.5]))
    assert val["threshold"] == threshold
    assert val["dice"] == val["by_threshold"][threshold]["dice"]
    assert val["per_channel"] == val["by_threshold"][threshold]["per_channel"]


def test_matches_direct_counting():
    logits, target, valid = random_data(2)
    val = evaluate(logits, target, valid)
    counts = confusion_counts(logits, target, valid)
    assert val["dice"] == pytest.approx(float(dice_score(counts, "macro")), abs=1e-12)
    assert val["per_image"]["dice"] == pytest.approx(float(dice_score(counts, "per_image")), abs=1e-12)


@pytest.mark.parametrize("batch_size", [1, 2, 9])
def test_any_batch_size_gives_the_one_pass_result(batch_size):
    # Invariance: everything is accumulated as counts or sums, never as per-batch means.
    data = random_data(3)
    one_pass, batched = evaluate(*data, batch_size=9), evaluate(*data, batch_size=batch_size)
    assert without_ece(batched) == without_ece(one_pass)
    for key in ("raw", "prior_corrected"):
        assert batched["ece"][key] == pytest.approx(one_pass["ece"][key], abs=1e-12)


def test_prior_correction_undoes_an_exact_shift():
    # Logits shifted by log q (what pos_weight q does to the odds) scored with the prior-corrected
    # threshold log q give exactly the unshifted logits' scores at 0.5, and the same calibration.
    logits, target, valid = random_data(4)
    logits = torch.where(logits.abs() < 1e-3, torch.full_like(logits, 0.5), logits)  # no ties at the threshold
    log_q = torch.tensor([0.7, 1.9, 3.1]).view(3, 1, 1)
    plain = evaluate(logits, target, valid)
    shifted = evaluate(logits + log_q, target, valid, log_q=log_q)
    corrected, reference = shifted["by_threshold"]["prior_corrected"], plain["by_threshold"]["0.5"]
    assert {k: v for k, v in corrected.items() if k != "thresholds"} == {
        k: v for k, v in reference.items() if k != "thresholds"
    }
    assert shifted["by_threshold"]["0.5"]["dice"] != plain["by_threshold"]["0.5"]["dice"]
    assert shifted["ece"]["prior_corrected"] == pytest.approx(plain["ece"]["raw"], abs=1e-6)


def constructed_tuning_case():
    """Two channels with known dataset-level best thresholds on the 0.01 grid.

    channel a: positives 10 px at p=0.355, 90 px at 0.805; negatives 100 px at 0.305, 5 at 0.605, 1000 at 0.105
      t in [0.305, 0.355): tp 100 fp 5 fn 0   -> Dice 200/205 = 0.9756 (best; first grid point 0.31)
      t in [0.355, 0.605): tp 90 fp 5 fn 10   -> 180/195;  t in [0.605, 0.805): tp 90 fp 0 fn 10 -> 180/190
      t in [0.105, 0.305): tp 100 fp 105      -> 200/305
    channel b: positives 50 px at 0.905, 5 at 0.455; negatives 30 at 0.655, 500 at 0.195, 620 at 0.005
      t in [0.195, 0.455): tp 55 fp 30 -> 110/140; [0.455, 0.655): tp 50 fp 30 fn 5 -> 100/135
      t in [0.655, 0.905): tp 50 fp 0 fn 5    -> 100/105 = 0.9524 (best; first grid point 0.66)
    1205 pixels per channel, shuffled, as 5 images of 1 x 241.
    """
    a = [(0.355, 1, 10), (0.805, 1, 90), (0.305, 0, 100), (0.605, 0, 5), (0.105, 0, 1000)]
    b = [(0.905, 1, 50), (0.455, 1, 5), (0.655, 0, 30), (0.195, 0, 500), (0.005, 0, 620)]
    g = torch.Generator().manual_seed(0)
    channels = []
    for spec in (a, b):
        prob = torch.cat([torch.full((n,), p) for p, _, n in spec])
        truth = torch.cat([torch.full((n,), float(y)) for _, y, n in spec])
        order = torch.randperm(prob.numel(), generator=g)
        channels.append((torch.logit(prob[order].double()).float(), truth[order]))
    logits = torch.stack([x for x, _ in channels], 0).view(2, 5, 1, 241).transpose(0, 1).contiguous()
    target = torch.stack([y for _, y in channels], 0).view(2, 5, 1, 241).transpose(0, 1).contiguous()
    return logits, target, torch.ones(5, 1, 1, 241, dtype=torch.bool)


def test_tuned_finds_the_known_best_threshold():
    logits, target, valid = constructed_tuning_case()
    val = evaluate(logits, target, valid, batch_size=2, threshold="tuned")
    assert val["thresholds"] == {"a": 0.31, "b": 0.66}
    assert val["per_channel"]["a"]["dice"] == pytest.approx(200 / 205, abs=1e-12)
    assert val["per_channel"]["b"]["dice"] == pytest.approx(100 / 105, abs=1e-12)
    # brute force over the grid with direct counting agrees, and tuned is never below 0.5
    grid, boundaries = probability_grid(), logit_boundaries(probability_grid())
    best = [
        max(
            range(99),
            key=lambda k: float(
                dice_score(confusion_counts(logits, target, valid, float(boundaries[k]))[:, c : c + 1], "macro")
            ),
        )
        for c in range(2)
    ]
    assert [round(float(grid[k]), 2) for k in best] == [0.31, 0.66]
    for name in ("a", "b"):
        assert val["per_channel"][name]["dice"] >= val["by_threshold"]["0.5"]["per_channel"][name]["dice"]
    # per-image counts at the tuned thresholds equal direct counting at those thresholds
    tuned_logits = torch.logit(torch.tensor([0.31, 0.66], dtype=torch.float64)).float().view(2, 1, 1)
    direct = confusion_counts(logits, target, valid, tuned_logits)
    assert val["per_image"]["dice"] == pytest.approx(float(dice_score(direct, "per_image")), abs=1e-12)


def test_given_tuned_thresholds_are_applied():
    logits, target, valid = random_data(5)
    val = evaluate(logits, target, valid, threshold="tuned", tuned_thresholds=[0.3, 0.6, 0.9])
    assert val["thresholds"] == {"a": 0.3, "b": 0.6, "c": 0.9} and "another split" in val["note"]
    logit = torch.logit(torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)).float().view(3, 1, 1)
    assert val["dice"] == pytest.approx(float(dice_score(confusion_counts(logits, target, valid, logit))), abs=1e-12)


def test_empty_image_fp_rate():
    # 4 images, 1 channel, 2x2, all valid. Truth empty in images 0, 1, 2; image 3 has a positive.
    # Predicted positives (logit > 0): image 1 (one pixel), image 3 -> among empty images 1 of 3.
    logits = -torch.ones(4, 1, 2, 2)
    logits[1, 0, 0, 0] = logits[3, 0, 1, 1] = 1.0
    target = torch.zeros(4, 1, 2, 2)
    target[3, 0, 1, 1] = 1
    evaluator = Evaluator(1, "cpu")
    evaluator.update(logits, target, torch.ones(4, 1, 2, 2, dtype=torch.bool))
    val = evaluator.compute(["a"])
    assert val["empty_image_fp_rate"]["a"] == pytest.approx(1 / 3)
    # with no ground-truth-empty image the rate is undefined: null
    evaluator.reset()
    evaluator.update(logits[3:], target[3:])
    assert evaluator.compute(["a"])["empty_image_fp_rate"] == {"a": None}


def test_evaluator_refuses_bad_arguments():
    Evaluator(3, "cpu", log_q=torch.zeros(3))
    with pytest.raises(ValueError, match="log_q"):
        Evaluator(3, "cpu", log_q=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="threshold"):
        evaluate(*random_data(6), threshold="best")
    with pytest.raises(ValueError, match="empty"):
        Evaluator(3, "cpu", empty="skip")


def test_no_update_gives_nulls_not_errors():
    val = Evaluator(2, "cpu").compute(["a", "b"])
    assert val["num_images"] == 0 and val["dice"] is None and val["ece"]["raw"] == {"a": None, "b": None}


def test_update_is_one_graph_without_host_sync():
    # torch.compile(fullgraph=True) fails on .item(), .cpu(), Python branches over tensor values.
    logits, target, valid = random_data(7, n=2)
    log_q = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    boundaries = logit_boundaries(probability_grid())
    compiled = torch.compile(batch_statistics, fullgraph=True, backend="eager")
    got = compiled(logits, target, valid, log_q, boundaries, 15, log_q)
    expected = batch_statistics(logits, target, valid, log_q, boundaries, 15, log_q)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-9)


@pytest.mark.parametrize("valid_channels", [None, 1, 3])
def test_batch_statistics_are_the_whole_batch_functions_bit_for_bit(valid_channels):
    # Independent check: the plain functions over the whole batch, against the parts (several per image here),
    # on channels_last logits as the model gives them, with soft labels, NaN, infinities and logits on the
    # grid's boundaries and beside them.
    g = torch.Generator().manual_seed(9)
    n, c, h, w = 2, 3, 61, 700
    assert len(batch_parts(torch.Size((n, c, h, w)), torch.device("cpu"))) > 2 * n
    boundaries = logit_boundaries(probability_grid())
    logits = torch.randn(n, c, h, w, generator=g) * 3
    edges = torch.cat([boundaries, torch.nextafter(boundaries, torch.tensor(9.0)), torch.tensor([math.nan, math.inf])])
    logits[0, 1, 5, : edges.numel()] = edges
    logits[1, 2, 60, :3] = torch.tensor([-math.inf, -0.0, math.nan])
    logits = logits.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(n, c, h, w, generator=g) < 0.2).float()
    target[0, 0, 0, :3] = torch.tensor([0.49, 0.5, 0.7])
    valid = None if valid_channels is None else torch.rand(n, valid_channels, h, w, generator=g) > 0.1
    log_q, tuned = torch.tensor([0.5, -1.0, 2.0]).view(c, 1, 1), torch.tensor([0.3, 0.0, -0.8]).view(c, 1, 1)
    a, b = torch.tensor([0.7, 1.0, 2.0], dtype=torch.float64), torch.tensor([-0.5, 0.0, 1.0], dtype=torch.float64)
    platt = (a.view(c, 1, 1), b.view(c, 1, 1))
    got = batch_statistics(logits, target, valid, log_q, boundaries, 15, tuned, platt)
    expected = {
        "0.5": confusion_counts(logits, target, valid, 0.0),
        "prior_corrected": confusion_counts(logits, target, valid, log_q),
        "tuned": confusion_counts(logits, target, valid, tuned),
        "histograms": threshold_histograms(logits, target, valid, boundaries),
        "ece_raw": calibration_sums(logits, target, valid, 0.0),
        "ece_prior_corrected": calibration_sums(logits, target, valid, log_q),
        "ece_platt": calibration_sums(logits, target, valid, -platt[1], scale=platt[0]),
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key].nan_to_num(-1), value.nan_to_num(-1)), key


def test_no_shift_counts_prior_corrected_once_with_the_same_statistics():
    # An unweighted run (q_eff = 1): the Evaluator passes log_q as 0.0, and the prior-corrected statistics are
    # the 0.5 ones, as the zero tensor gives them.
    logits, target, valid = random_data(10, n=3)
    boundaries = logit_boundaries(probability_grid())
    once = batch_statistics(logits, target, valid, 0.0, boundaries)
    zeros = batch_statistics(logits, target, valid, torch.zeros(3, 1, 1), boundaries)
    assert set(once) == set(zeros) and all(torch.equal(once[key], zeros[key]) for key in zeros)
    assert Evaluator(3, "cpu").shift == 0.0 and Evaluator(3, "cpu", log_q=torch.zeros(3)).shift == 0.0
    assert isinstance(Evaluator(3, "cpu", log_q=torch.tensor([0.0, 1.0, 0.0])).shift, torch.Tensor)


@pytest.mark.cuda
def test_update_does_not_synchronise_on_cuda():
    logits, target, valid = (t.cuda() for t in random_data(8))
    evaluator = Evaluator(3, "cuda", log_q=torch.tensor([0.5, 1.0, 2.0]))
    evaluator.update(logits, target, valid)  # warm-up (lazy CUDA initialisation may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        evaluator.update(logits, target, valid)
        counts = confusion_counts(logits, target, valid)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert counts.shape == (9, 3, 4)
    cpu = evaluate(*random_data(8), log_q=torch.tensor([0.5, 1.0, 2.0]))
    assert np.isclose(evaluator.compute(NAMES)["dice"] or 0.0, cpu["dice"] or 0.0)


def test_brier_score_is_the_mean_squared_error_over_valid_pixels():
    logits, target, valid = random_data(3)
    log_q = torch.tensor([1.0, 2.0, 0.5]).view(3, 1, 1)
    ece = evaluate(logits, target, valid, log_q=log_q)["ece"]
    for variant, shift in (("raw", 0.0), ("prior_corrected", log_q)):
        squared = (torch.sigmoid(logits.double() - shift) - target.double()) ** 2
        mask = valid.expand_as(squared)
        for c, name in enumerate(NAMES):
            expected = squared[:, c][mask[:, c]].mean().item()
            assert ece["brier"][variant][name] == pytest.approx(expected, abs=1e-7)  # p in float32
        assert ece["brier_mean"][variant] == pytest.approx(np.mean(list(ece["brier"][variant].values())), abs=1e-12)


def test_platt_fitted_on_one_pass_and_applied_in_another():
    """A model whose logits are 2x too confident and shifted by +log 4: Platt scaling fitted on validation
    undoes both (a ~ 0.5, b ~ -log 4), and lowers ECE and Brier on new data."""
    g = torch.Generator().manual_seed(7)

    def data(n):
        x = torch.randn(n, 1, 32, 32, generator=g) * 2
        target = (torch.rand(n, 1, 32, 32, generator=g) < torch.sigmoid(x)).float()
        return 2 * (x + math.log(4)), target, torch.ones(n, 1, 32, 32, dtype=torch.bool)

    chooser = Evaluator(1, "cpu", calibration_pixels=512, seed=0)
    logits, target, valid = data(16)
    chooser.update(logits, target, valid)
    a, b = chooser.fit_platt()
    assert a.item() == pytest.approx(0.5, abs=0.05) and b.item() == pytest.approx(-math.log(4), abs=0.1)
    again = Evaluator(1, "cpu", calibration_pixels=512, seed=0)
    again.update(logits, target, valid)
    assert torch.equal(again.fit_platt()[0], a)  # seeded: the same pixels, the same fit

    held_out = evaluate(*data(16), platt=(a, b), platt_fitted_on="fitted on val")["ece"]
    assert held_out["platt"]["a"] < held_out["raw"]["a"] / 3
    assert held_out["brier"]["platt"]["a"] < held_out["brier"]["raw"]["a"]
    assert held_out["platt_parameters"] == {"a": {"a": a.item(), "b": b.item()}}
    assert held_out["platt_fitted_on"] == "fitted on val"
    assert Evaluator(1, "cpu").fit_platt() is None  # no calibration pixels asked for


def test_per_image_scores_follow_the_dataset_indices():
    logits, target, valid = random_data(4, n=4)
    evaluator = Evaluator(3, "cpu")
    order = [2, 0, 3, 1]  # the items arrive out of order
    for i in order:
        evaluator.update(logits[i : i + 1], target[i : i + 1], valid[i : i + 1], torch.tensor([i]))
    evaluator.compute(NAMES)
    per_image = evaluator.per_image(NAMES, ["w", "x", "y", "z"])
    counts = confusion_counts(logits, target, valid, 0.0)
    for i, stem in enumerate("wxyz"):
        dice = dice_score(counts[i : i + 1], "per_image").item()
        assert per_image["0.5"][stem]["dice"] == pytest.approx(dice, abs=1e-12)
    assert set(per_image) == set(POLICIES)


def test_structure_block_scores_every_policy():
    """Two cells split by a membrane (the positive class); a prediction that misses the membrane at 0.5
    but not at the tuned threshold: V_rand 1 where the cells are separated."""
    from seg.scoring.structure_scores import StructureSettings

    target = torch.zeros(1, 1, 8, 8)
    target[..., 4] = 1  # a membrane column between two cells
    logits = torch.where(target > 0, torch.tensor(-0.5), torch.tensor(-4.0))  # membrane at p = 0.38
    evaluator = Evaluator(1, "cpu", tuned_thresholds=[0.3], structure=StructureSettings(("rand", "vi"), "negative"))
    evaluator.update(logits, target)
    block = evaluator.compute(["membrane"])["structure"]
    assert block["objects_from"] == "negative" and block["num_images"] == 1
    at_half, tuned = block["by_threshold"]["0.5"]["mean"], block["by_threshold"]["tuned"]["mean"]
    cells = np.where(np.arange(8) < 4, 1, 2) * (np.arange(8) != 4)  # truth: two cells, the membrane ignored
    merged = 1 - adapted_rand_error(np.tile(cells, (8, 1)), np.ones((8, 8), int), ignore_labels=(0,))[0]
    assert at_half["v_rand"] == pytest.approx(merged, abs=1e-12) and merged < 0.7  # no membrane: one cell
    assert tuned["v_rand"] == 1.0 and tuned["v_info"] == 1.0
    assert block["by_threshold"]["tuned"]["per_channel"]["membrane"] == tuned
    assert evaluator.per_image(["membrane"], ["only"])["tuned"]["only"]["v_rand"] == 1.0
