"""Aggregators, the flat/padded bag convention, Bradley–Terry and bag losses on hand-sized tensors."""

from __future__ import annotations

import math

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.fractal.aggregate import (
    AGGREGATORS,
    BAG_LOSSES,
    bag_index_from_lengths,
    bradley_terry,
    check_bag_index,
    flat_to_padded,
    get_aggregator,
    get_bag_loss,
    padded_to_flat,
    positions_in_bag,
)

SCORES = torch.tensor([0.2, 0.4, 0.9, 0.3, 0.6, 0.7], dtype=torch.float64)
BAGS = torch.tensor([0, 0, 1, 1, 2, 2])

HARD_EXPECTED = {
    "max": [0.4, 0.9, 0.7],
    "min": [0.2, 0.3, 0.6],
    "avg": [0.3, 0.6, 0.65],
    "noisy_or": [1 - 0.8 * 0.6, 1 - 0.1 * 0.7, 1 - 0.4 * 0.3],
    "noisy_and": [0.2 * 0.4, 0.9 * 0.3, 0.6 * 0.7],
}


def _lse_mean(values: list[float], tau: float) -> float:
    return tau * math.log(sum(math.exp(v / tau) for v in values) / len(values))


@pytest.mark.parametrize("name", sorted(HARD_EXPECTED))
def test_aggregators_match_hand_values(name):
    out = AGGREGATORS[name](SCORES, BAGS, 3, 1.0)
    assert torch.allclose(out, torch.tensor(HARD_EXPECTED[name], dtype=torch.float64))


def test_smooth_aggregators_match_hand_values():
    pairs = [[0.2, 0.4], [0.9, 0.3], [0.6, 0.7]]
    for tau in (0.1, 1.0):
        lse = AGGREGATORS["lse_max"](SCORES, BAGS, 3, tau)
        soft = AGGREGATORS["softmin"](SCORES, BAGS, 3, tau)
        assert torch.allclose(lse, torch.tensor([_lse_mean(p, tau) for p in pairs], dtype=torch.float64))
        assert torch.allclose(
            soft, torch.tensor([-_lse_mean([-v for v in p], tau) for p in pairs], dtype=torch.float64)
        )


def test_bags_need_not_be_contiguous():
    perm = torch.tensor([5, 2, 0, 3, 1, 4])
    for name, fn in AGGREGATORS.items():
        assert torch.allclose(fn(SCORES[perm], BAGS[perm], 3, 0.3), fn(SCORES, BAGS, 3, 0.3)), name


@pytest.mark.parametrize("name", ["avg", "lse_max", "softmin", "noisy_or", "noisy_and"])
def test_smooth_aggregators_pass_gradcheck(name):
    scores = torch.rand(7, dtype=torch.float64).mul(0.8).add(0.1).requires_grad_()
    bags = torch.tensor([0, 1, 0, 2, 1, 1, 0])
    fn = AGGREGATORS[name]
    assert torch.autograd.gradcheck(lambda s: fn(s, bags, 3, 0.5), (scores,))


def test_hard_max_and_min_send_gradient_to_the_extreme_sentence():
    scores = SCORES.clone().requires_grad_()
    AGGREGATORS["max"](scores, BAGS, 3, 1.0).sum().backward()
    assert scores.grad.tolist() == [0, 1, 1, 0, 0, 1]
    scores.grad = None
    AGGREGATORS["min"](scores, BAGS, 3, 1.0).sum().backward()
    assert scores.grad.tolist() == [1, 0, 0, 1, 1, 0]


def test_smooth_aggregators_approach_hard_ones_as_temperature_shrinks():
    torch.manual_seed(0)
    scores = torch.rand(40, dtype=torch.float64)
    bags = torch.randint(0, 5, (40,))
    bags[:5] = torch.arange(5)
    hard_max, hard_min, avg = (AGGREGATORS[n](scores, bags, 5, 1.0) for n in ("max", "min", "avg"))
    previous_gap = math.inf
    for tau in (1.0, 0.1, 0.01, 0.001):
        lse = AGGREGATORS["lse_max"](scores, bags, 5, tau)
        soft = AGGREGATORS["softmin"](scores, bags, 5, tau)
        assert torch.all(lse <= hard_max + 1e-12) and torch.all(lse >= avg - 1e-12)
        assert torch.all(soft >= hard_min - 1e-12) and torch.all(soft <= avg + 1e-12)
        gap = float((hard_max - lse).max())
        assert gap <= tau * math.log(40) + 1e-12 and gap < previous_gap
        previous_gap = gap
    assert torch.allclose(AGGREGATORS["lse_max"](scores, bags, 5, 1e-4), hard_max, atol=1e-3)
    assert torch.allclose(AGGREGATORS["softmin"](scores, bags, 5, 1e-4), hard_min, atol=1e-3)
    assert torch.allclose(AGGREGATORS["lse_max"](scores, bags, 5, 1e4), avg, atol=1e-4)


def test_noisy_or_handles_certain_sentences_and_long_bags():
    out = AGGREGATORS["noisy_or"](torch.tensor([1.0, 0.0, 0.01]), torch.tensor([0, 1, 1]), 2, 1.0)
    assert out[0] == pytest.approx(1.0, abs=1e-5) and out[1] == pytest.approx(0.01)
    long_bag = AGGREGATORS["noisy_and"](torch.full((500,), 0.99), torch.zeros(500, dtype=torch.long), 1, 1.0)
    assert long_bag.item() == pytest.approx(0.99**500, rel=1e-4)


@pytest.mark.parametrize(
    ("bag_index", "n_bags", "message"),
    [
        (torch.tensor([0, 0, 2]), 3, "no sentences"),
        (torch.tensor([0, 3]), 3, "0..2"),
        (torch.tensor([0, -1]), 2, "0..1"),
        (torch.tensor([0.0, 1.0]), 2, "LongTensor"),
        (torch.tensor([[0, 1]]), 2, "LongTensor"),
    ],
)
def test_bad_bag_index_is_rejected(bag_index, n_bags, message):
    with pytest.raises(ValueError, match=message):
        check_bag_index(bag_index, n_bags)
    if bag_index.dim() == 1:
        for fn in AGGREGATORS.values():
            with pytest.raises(ValueError):
                fn(torch.full(bag_index.shape, 0.5), bag_index, n_bags, 0.1)


def test_length_mismatch_and_bad_temperature_are_rejected():
    with pytest.raises(ValueError, match="3 entries but there are 2"):
        AGGREGATORS["max"](torch.tensor([0.1, 0.2]), torch.tensor([0, 0, 0]), 1, 1.0)
    for name in ("lse_max", "softmin"):
        with pytest.raises(ValueError, match="temperature"):
            AGGREGATORS[name](SCORES, BAGS, 3, 0.0)


def test_registry_lookups():
    assert get_aggregator("lse_max") is AGGREGATORS["lse_max"]
    assert get_bag_loss("mse") is BAG_LOSSES["mse"]
    with pytest.raises(ConfigError, match="unknown aggregator 'mean'.*max, min, avg"):
        get_aggregator("mean")
    with pytest.raises(ConfigError, match="unknown bag loss 'hinge'"):
        get_bag_loss("hinge")


def test_flat_and_padded_round_trip():
    bags = bag_index_from_lengths([2, 3, 1])
    assert bags.tolist() == [0, 0, 1, 1, 1, 2]
    values = torch.arange(6.0, requires_grad=True)
    padded, mask = flat_to_padded(values, bags, 3, fill=-1.0)
    assert padded.tolist() == [[0, 1, -1], [2, 3, 4], [5, -1, -1]]
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    flat, flat_bags = padded_to_flat(padded, mask)
    assert flat.tolist() == values.tolist() and flat_bags.tolist() == bags.tolist()
    (padded * mask).sum().backward()
    assert values.grad.tolist() == [1.0] * 6


def test_padding_keeps_order_of_appearance_for_interleaved_bags():
    bags = torch.tensor([1, 0, 1, 0, 1])
    assert positions_in_bag(bags).tolist() == [0, 0, 1, 1, 2]
    embeddings = torch.arange(10.0).reshape(5, 2)
    padded, mask = flat_to_padded(embeddings, bags, 2)
    assert padded[0, :2].tolist() == [[2, 3], [6, 7]] and padded[1].tolist() == [[0, 1], [4, 5], [8, 9]]
    assert mask.sum().item() == 5
    with pytest.raises(ValueError, match="no sentences"):
        padded_to_flat(padded, torch.tensor([[True, False, False], [False, False, False]]))


def test_bradley_terry_values_and_gradient():
    a = torch.tensor([0.7, 0.5, 0.1], dtype=torch.float64)
    b = torch.tensor([0.5, 0.5, 0.3], dtype=torch.float64)
    p = bradley_terry(a, b)
    assert p.tolist() == pytest.approx([1 / (1 + math.exp(-1.0)), 0.5, 1 / (1 + math.exp(1.0))])
    assert torch.allclose(p + bradley_terry(b, a), torch.ones(3, dtype=torch.float64))
    assert bradley_terry(a, b, scale=1.0)[0].item() == pytest.approx(1 / (1 + math.exp(-0.2)))
    assert torch.autograd.gradcheck(bradley_terry, (a.clone().requires_grad_(), b.clone().requires_grad_()))


def test_bag_losses_match_hand_values():
    p = torch.tensor([0.8, 0.3], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert BAG_LOSSES["bce"](p, y, 1e-6).item() == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert BAG_LOSSES["mse"](p, y, 1e-6).item() == pytest.approx((0.2**2 + 0.3**2) / 2)
    soft = BAG_LOSSES["bce"](torch.tensor([0.5]), torch.tensor([0.5]), 1e-6).item()
    assert soft == pytest.approx(math.log(2), rel=1e-6)


def test_bce_clamps_certain_wrong_predictions():
    p = torch.tensor([0.0, 1.0], requires_grad=True)
    loss = BAG_LOSSES["bce"](p, torch.tensor([1.0, 0.0]), 1e-6)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(1e-6), rel=1e-3)
    loss.backward()
    assert torch.all(torch.isfinite(p.grad))
    with pytest.raises(ValueError, match="differ in shape"):
        BAG_LOSSES["bce"](torch.tensor([0.5, 0.5]), torch.tensor([1.0]), 1e-6)
