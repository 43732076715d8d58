"""Objectives on hand-made activations: values, composition, per-image restriction, coupling."""

from __future__ import annotations

import pytest
import torch

from fvdesk.core.optim import objectives as O


@pytest.fixture
def acts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv": torch.randn(4, 5, 6, 7, generator=g),
        "fc": torch.randn(4, 10, generator=g),
    }


def test_channel_neuron_deepdream(acts) -> None:
    a = acts["conv"]
    assert torch.allclose(O.channel("conv", 2)(acts), a[:, 2].mean((1, 2)))
    assert torch.allclose(O.neuron("conv", 2)(acts), a[:, 2, 3, 3])  # centre (H//2, W//2)
    assert torch.allclose(O.neuron("conv", 2, x=1, y=4)(acts), a[:, 2, 4, 1])
    assert torch.allclose(O.deepdream("conv")(acts), a.pow(2).mean((1, 2, 3)))
    assert O.channel("conv", 1).layers == ("conv",)


def test_a_neuron_off_the_grid_is_one_sentence_not_an_index_error(acts) -> None:
    """A size-agnostic model rendered smaller than the grid the position came from."""
    from fvdesk.core.errors import RenderError

    for x, y in ((7, 0), (0, 6), (-1, 2)):
        with pytest.raises(RenderError, match=r"outside conv's 7x6 grid") as e:
            O.neuron("conv", 2, x=x, y=y)(acts)
        assert "\n" not in str(e.value)
    assert torch.allclose(O.neuron("conv", 2, x=6, y=5)(acts), acts["conv"][:, 2, 5, 6])


def test_logit_and_probability(acts) -> None:
    f = acts["fc"]
    assert torch.allclose(O.logit("fc", 3)(acts), f[:, 3])
    assert torch.allclose(O.probability("fc", 3)(acts), torch.softmax(f, 1)[:, 3])
    # fully convolutional "logits": spatial mean, then softmax over channels
    assert torch.allclose(
        O.probability("conv", 1)(acts), torch.softmax(acts["conv"].mean((2, 3)), 1)[:, 1]
    )
    assert torch.allclose(O.channel("fc", 3)(acts), f[:, 3])


def test_per_image_units_and_batch_restriction(acts) -> None:
    a = acts["conv"]
    v = O.channel("conv", [0, 1, 2, 3])(acts)
    assert torch.allclose(v, torch.stack([a[i, i].mean() for i in range(4)]))
    r = O.channel("conv", 4, batch=2)(acts)
    assert r[2] == a[2, 4].mean() and r[[0, 1, 3]].abs().sum() == 0
    p = O.probability("fc", [1, 2, 3, 4])(acts)
    assert torch.allclose(
        p, torch.softmax(acts["fc"], 1)[torch.arange(4), torch.tensor([1, 2, 3, 4])]
    )
    with pytest.raises(ValueError):
        O.channel("conv", [0, 1])(acts)
    with pytest.raises(IndexError):
        O.channel("conv", 5)(acts)


def test_restricted_gradient_reaches_only_its_image() -> None:
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    (O.channel("l", 0, batch=1)({"l": x * 2})).sum().backward()
    assert x.grad is not None
    assert x.grad[1].abs().sum() > 0 and x.grad[[0, 2]].abs().sum() == 0


def test_arithmetic_composes(acts) -> None:
    a, b, c = O.channel("conv", 0), O.logit("fc", 1), O.deepdream("conv")
    combo = a + 2 * b - c / 4
    expected = a(acts) + 2 * b(acts) - c(acts) / 4
    assert torch.allclose(combo(acts), expected)
    assert combo.layers == ("conv", "fc")
    assert torch.allclose((-a)(acts), -a(acts))
    assert torch.allclose(O.negative(a)(acts), -a(acts))
    assert torch.allclose((a * 3)(acts), 3 * a(acts))
    assert sum([a, b]).layers == ("conv", "fc")  # type: ignore[union-attr]
    assert isinstance(combo, O.Linear) and len(combo.terms) == 3  # nested sums are flattened
    assert "channel(conv, 0)" in combo.describe() and "- 0.25*deepdream(conv)" in combo.describe()
    with pytest.raises(TypeError):
        a * a  # type: ignore[operator]
    with pytest.raises(TypeError):
        a + 1  # type: ignore[operator]


def test_direction_and_random_direction(acts) -> None:
    v = torch.zeros(5)
    v[3] = 2.0
    assert torch.allclose(O.direction("conv", v)(acts), 2 * acts["conv"][:, 3].mean((1, 2)))
    r = O.random_direction("conv", 5, seed=1)
    assert isinstance(r, O.Direction)
    assert r.vector.norm().item() == pytest.approx(1.0)
    assert torch.equal(r.vector, O.random_direction("conv", 5, seed=1).vector)  # type: ignore[attr-defined]
    assert not torch.equal(r.vector, O.random_direction("conv", 5, seed=2).vector)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        O.direction("conv", torch.ones(3))(acts)


def test_diversity_is_negative_gram_cosine() -> None:
    base = torch.rand(1, 4, 5, 5)
    same = {"l": base.repeat(3, 1, 1, 1)}
    d = O.diversity("l")
    assert d.coupled
    # identical images: each pair has cosine 1 -> each image -(n-1)/n
    assert torch.allclose(d(same), torch.full((3,), -2 / 3), atol=1e-5)
    # channels that never co-occur across images: Gram matrices are orthogonal
    ortho = torch.zeros(2, 2, 3, 3)
    ortho[0, 0] = 1.0
    ortho[1, 1] = 1.0
    assert torch.allclose(d({"l": ortho}), torch.zeros(2), atol=1e-6)
    # groups are independent
    g = O.diversity("l", groups=[[0, 1], [2]])(same)
    assert torch.allclose(g, torch.tensor([-0.5, -0.5, 0.0]), atol=1e-5)


def test_diversity_gradient_makes_images_less_alike() -> None:
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    d = O.diversity("l")
    before = d({"l": x}).sum()
    before.backward()
    with torch.no_grad():
        y = (x + 0.1 * x.grad).clamp_min(0)
    assert d({"l": y}).sum() > before


def test_interpolation_and_alignment(acts) -> None:
    a, b = O.channel("conv", 0), O.channel("conv", 1)
    it = O.interpolate(a, b, 4)
    t = torch.tensor([0, 1 / 3, 2 / 3, 1])
    assert torch.allclose(it(acts), (1 - t) * a(acts) + t * b(acts))
    sub = it.subset(2, 4)
    two = {"conv": acts["conv"][2:4]}
    assert torch.allclose(sub(two), it(acts)[2:4])
    al = O.alignment("conv")
    assert al.coupled
    same = {"conv": acts["conv"][:1].repeat(4, 1, 1, 1)}
    assert torch.allclose(al(same), torch.zeros(4))
    assert (al(acts) < 0).all()
    full = al(acts).sum()
    f = acts["conv"].flatten(1)
    expected = -sum(
        ((f[i] - f[i + d]) ** 2).mean() / 2**d for d in range(1, 4) for i in range(4 - d)
    )
    assert full.item() == pytest.approx(float(expected), rel=1e-5)


def test_main_part_and_subsets(acts) -> None:
    a = O.channel("conv", [0, 1, 2, 3])
    total = a + 10 * O.diversity("conv")
    assert total.coupled
    main = total.main()
    assert main is not None and not main.coupled
    assert torch.allclose(main(acts), a(acts))
    assert O.diversity("conv").main() is None
    with pytest.raises(ValueError):
        total.subset(0, 2)
    sub = (a + O.channel("conv", 4, batch=3)).subset(2, 4)
    two = {"conv": acts["conv"][2:4]}
    expected = torch.stack(
        [acts["conv"][2, 2].mean(), acts["conv"][3, 3].mean() + acts["conv"][3, 4].mean()]
    )
    assert torch.allclose(sub(two), expected)
    assert torch.equal(O.channel("conv", 1, batch=0).subset(2, 4)(two), torch.zeros(2))


def test_with_diversity_scales_the_term_by_the_objective() -> None:
    x = torch.rand(4, 3, 5, 5, requires_grad=True)
    acts = {"l": x * 10}
    main = O.channel("l", [0, 1, 2, 0])
    combo = O.with_diversity(main, "l", weight=2.0, groups=[[0, 1], [2, 3]])
    assert combo.coupled and combo.main() is main and combo.layers == ("l",)
    v, d = main(acts), O.diversity("l", [[0, 1], [2, 3]])(acts)
    scale = torch.stack([v[:2].abs().mean()] * 2 + [v[2:].abs().mean()] * 2).detach()
    assert torch.allclose(combo(acts), v + 2.0 * scale * d)
    # the same balance whatever the activation scale: values scale, the weight does not change
    big = {"l": x * 1000}
    ratio = (combo(big) - main(big)) / (combo(acts) - main(acts))
    assert torch.allclose(ratio, torch.full((4,), 100.0), rtol=1e-4)
    with pytest.raises(ValueError):
        O.with_diversity(combo, "l")


def test_a_direction_on_a_layer_whose_channels_follow_the_canvas_is_one_sentence() -> None:
    """A ViT attention tensor's axis 1 is the token count: a direction read at 224 px (257
    tokens) meets 5 tokens at 32 px; seen as an internal ValueError on a trained ViT-S."""
    import torch

    from fvdesk.core.errors import RenderError
    from fvdesk.core.optim.objectives import CosineTo, Direction

    acts = {"attn": torch.ones(2, 5, 4, 4)}
    for objective in (Direction("attn", torch.ones(257)), CosineTo("attn", torch.ones(257))):
        with pytest.raises(RenderError, match=r"^attn has 5 channels at this canvas size but the"):
            objective(acts)
