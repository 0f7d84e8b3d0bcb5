"""Filter and layer criteria against values computed by hand (plain torch / numpy) on tiny models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from graphs.blocks import removable_blocks
from graphs.deps import analyze
from graphs.errors import InputError
from toolchain.criteria import filter_scores, known_filter_criteria, lamp_normalise, layer_scores
from toolchain.criteria.layers import imprinting_accuracy, ranks
from toolchain.export import export_onnx


class Plain(nn.Module):
    """conv1(3->4)+bn1+relu, conv2(4->6)+bn2+relu, global pool, fc(6->3)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Basic(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(c)
        self.conv_b = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn_b(self.conv_b(F.relu(self.bn_a(self.conv_a(x))))))


class Res(nn.Module):
    """stem conv0+bn0 (3->4), three residual blocks on the 4-channel stream, pool, fc(4->3)."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.blocks = nn.Sequential(Basic(4), Basic(4), Basic(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn0(self.conv0(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("bn_a.weight") else 0.0))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _setup(model, seed=0):
    model = _randomise(model, seed)
    analysis = analyze(export_onnx(model, (1, 3, 8, 8), None))
    return model, analysis


@pytest.fixture(scope="module")
def plain():
    return _setup(Plain())


@pytest.fixture(scope="module")
def res():
    return _setup(Res(), seed=1)


def _loader(n=24, batch=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def _rows(w):
    return w.detach().double().reshape(w.shape[0], -1)


# --------------------------------------------------------------------------------------------
# filter criteria on the plain net


def test_registry_names():
    assert known_filter_criteria() == ["l1", "l2", "taylor", "taylor-fm", "bn-gamma", "halp", "lamp", "sp-lamp",
                                       "taylor-lamp", "random"]


def test_l1_l2(plain):
    model, a = plain
    l1, l2 = filter_scores("l1", model, a), filter_scores("l2", model, a)
    for group, name in (("conv1", "conv1"), ("conv2", "conv2"), ("fc", "fc")):
        w = _rows(getattr(model, name).weight)
        np.testing.assert_allclose(l1[group], w.abs().sum(1).numpy(), rtol=1e-10)
        np.testing.assert_allclose(l2[group], w.pow(2).sum(1).sqrt().numpy(), rtol=1e-10)
    assert np.all(l2["input"] == 0)  # no producer filters


def _grads(model, loader, params):
    """Per batch: gradients of the mean cross-entropy w.r.t. params (eval mode)."""
    out = []
    for x, y in loader:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        out.append([p.grad.detach().double().clone() for p in params])
    model.zero_grad()
    return out


def test_taylor_weights_eq2(plain):
    model, a = plain
    loader = _loader()
    got = filter_scores("taylor", model, a, loader, batches=2)
    per_batch = _grads(model, list(loader)[:2], [model.conv1.weight, model.conv2.weight])
    for i, (group, w) in enumerate((("conv1", model.conv1.weight), ("conv2", model.conv2.weight))):
        sq = [(_rows(g[i] * w.detach().double())).pow(2).sum(1) for g in per_batch]
        np.testing.assert_allclose(got[group], (sum(sq) / 2).sqrt().numpy(), rtol=1e-6)
    # one batch: exactly ||G (.) W||_2 per filter (LayerPrune eq. 2)
    one = filter_scores("taylor", model, a, loader, batches=1)
    (g,) = _grads(model, list(loader)[:1], [model.conv2.weight])
    np.testing.assert_allclose(one["conv2"], _rows(g[0] * model.conv2.weight.detach().double()).norm(dim=1).numpy(),
                               rtol=1e-6)


def test_taylor_feature_maps(plain):
    model, a = plain
    loader = _loader()
    got = filter_scores("taylor-fm", model, a, loader, batches=3)
    expect = {"conv1": 0, "conv2": 0}
    for x, y in loader:
        a1 = model.conv1(x)
        a2 = model.conv2(F.relu(model.bn1(a1)))
        out = model.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(model.bn2(a2)), 1), 1))
        g1, g2 = torch.autograd.grad(F.cross_entropy(out, y), [a1, a2])
        expect["conv1"] = expect["conv1"] + (a1 * g1).double().sum((2, 3)).mean(0).abs() / 3
        expect["conv2"] = expect["conv2"] + (a2 * g2).double().sum((2, 3)).mean(0).abs() / 3
    for k in expect:
        np.testing.assert_allclose(got[k], expect[k].detach().numpy(), rtol=1e-5, atol=1e-12)


def test_bn_gamma_eq3(plain):
    model, a = plain
    got = filter_scores("bn-gamma", model, a)
    np.testing.assert_allclose(got["conv1"], model.bn1.weight.detach().double().pow(2).numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["conv2"], model.bn2.weight.detach().double().pow(2).numpy(), rtol=1e-12)


def test_halp(plain):
    model, a = plain
    loader = _loader()
    got = filter_scores("halp", model, a, loader, batches=2)
    bn = [model.bn1, model.bn2]
    per = _grads(model, list(loader)[:2], [t for b in bn for t in (b.weight, b.bias)])
    for i, (group, b) in enumerate(zip(("conv1", "conv2"), bn)):
        vals = [(g[2 * i] * b.weight.detach().double() + g[2 * i + 1] * b.bias.detach().double()).abs() for g in per]
        np.testing.assert_allclose(got[group], (sum(vals) / 2).numpy(), rtol=1e-6)


def _lamp_by_hand(v):
    v = list(map(float, v))
    return np.array([v[u] / sum(x for x in v if x >= v[u]) for u in range(len(v))])


def test_lamp_normalisation():
    v = np.array([4.0, 1.0, 3.0, 2.0])
    s = lamp_normalise(v)
    np.testing.assert_allclose(s, [1.0, 1 / 10, 3 / 7, 2 / 9])
    np.testing.assert_allclose(s, _lamp_by_hand(v))
    assert lamp_normalise(np.zeros(3)).tolist() == [0.0, 0.0, 1.0]  # one unit still scores 1


def test_lamp(plain):
    model, a = plain
    got = filter_scores("lamp", model, a)
    for group, name in (("conv1", "conv1"), ("conv2", "conv2")):
        v = _rows(getattr(model, name).weight).pow(2).sum(1).numpy()
        np.testing.assert_allclose(got[group], _lamp_by_hand(v), rtol=1e-10)


def test_sp_lamp(plain):
    model, a = plain
    got = filter_scores("sp-lamp", model, a)
    w1, w2, wf = (_rows(m.weight) for m in (model.conv1, model.conv2, model.fc))
    v1 = w1.pow(2).sum(1) * model.conv2.weight.detach().double().pow(2).sum((0, 2, 3))  # eq. 2
    v2 = w2.pow(2).sum(1) * model.fc.weight.detach().double().pow(2).sum(0)
    vf = wf.pow(2).sum(1)  # eq. 3: the classifier's outputs feed no layer
    for group, v in (("conv1", v1), ("conv2", v2), ("fc", vf)):
        s = got[group]
        np.testing.assert_allclose(s, _lamp_by_hand(v.numpy()), rtol=1e-10)
        assert np.all((s > 0) & (s <= 1)) and np.sum(s == 1.0) == 1
        # within a group the normalisation keeps v_u's order (v_u / (v_u + larger ones) grows with v_u)
        assert np.argsort(s, kind="stable").tolist() == np.argsort(v.numpy(), kind="stable").tolist()
        assert np.argmax(s) == np.argmax(v.numpy())
    # differs from plain LAMP where the next layer's norms reorder units
    assert not np.allclose(got["conv1"], filter_scores("lamp", model, a)["conv1"])


def test_random_seeded(plain):
    model, a = plain
    r0, r0b, r1 = (filter_scores("random", model, a, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(r0[k], r0b[k]) for k in r0)
    assert not np.array_equal(r0["conv2"], r1["conv2"])
    assert all(np.all((v >= 0) & (v < 1)) and len(v) == a.group(k).channels for k, v in r0.items())


# --------------------------------------------------------------------------------------------
# residual coupling


def test_residual_group_aggregation(res):
    model, a = res
    stream = a.group("conv0")
    convs = [model.conv0] + [b.conv_b for b in model.blocks]
    norms = np.stack([_rows(c.weight).norm(dim=1).numpy() for c in convs])
    for agg, fn in (("sum", np.sum), ("mean", np.mean), ("max", np.max)):
        np.testing.assert_allclose(filter_scores("l2", model, a, aggregate=agg)[stream.id], fn(norms, 0), rtol=1e-10)
    gammas = np.stack([bn.weight.detach().double().pow(2).numpy() for bn in [model.bn0] + [b.bn_b for b in model.blocks]])
    np.testing.assert_allclose(filter_scores("bn-gamma", model, a)[stream.id], gammas.sum(0), rtol=1e-10)
    # a block's inner group holds only conv_a / bn_a
    inner = a.group("blocks.0.conv_a")
    np.testing.assert_allclose(filter_scores("l2", model, a)[inner.id], _rows(model.blocks[0].conv_a.weight).norm(dim=1))
    # SP-LAMP on the stream: each of the four writers' filters is scored as its own layer (eq. 2 with
    # the second factor over every conv_a / fc input slice reading the stream, LAMP-normalised within
    # that writer), and a unit sums its four layers' scores: eq. 5 sums kept scores over layers.
    consumers = (sum(b.conv_a.weight.detach().double().pow(2).sum((0, 2, 3)).numpy() for b in model.blocks)
                 + model.fc.weight.detach().double().pow(2).sum(0).numpy())
    per_layer = np.stack([_lamp_by_hand(n ** 2 * consumers) for n in norms])
    stream_scores = filter_scores("sp-lamp", model, a)[stream.id]
    np.testing.assert_allclose(stream_scores, per_layer.sum(0), rtol=1e-10)
    assert stream_scores.sum() > 3 * filter_scores("sp-lamp", model, a)[inner.id].sum()  # four layers vs one
    np.testing.assert_allclose(filter_scores("sp-lamp", model, a, aggregate="max")[stream.id], per_layer.max(0), rtol=1e-10)
    np.testing.assert_allclose(filter_scores("lamp", model, a)[stream.id],
                               np.stack([_lamp_by_hand(n ** 2) for n in norms]).sum(0), rtol=1e-10)


class Inverted(nn.Module):
    """stem(3->4); an inverted residual: expand 1x1 (4->8), depthwise 3x3, project 1x1 (8->4), added
    to the stem's stream; pool, fc(4->3)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.expand = nn.Conv2d(4, 8, 1, bias=False)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.project = nn.Conv2d(8, 4, 1, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(F.relu(self.dw(F.relu(self.expand(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_depthwise_joins_its_producers_layer():
    model, a = _setup(Inverted(), seed=3)
    scores = filter_scores("sp-lamp", model, a)
    expand, stream = a.group("expand"), a.group("stem")
    # The expansion unit is one layer: the depthwise filter's squared norm joins the expand filter's,
    # times the project conv's input slice (eq. 2), normalised once.
    first = _rows(model.expand.weight).pow(2).sum(1) + _rows(model.dw.weight).pow(2).sum(1)
    v = first * model.project.weight.detach().double().pow(2).sum((0, 2, 3))
    np.testing.assert_allclose(scores[expand.id], _lamp_by_hand(v.numpy()), rtol=1e-10)
    # The stream: two layers (stem, project), each normalised on its own, summed.
    consumers = (model.expand.weight.detach().double().pow(2).sum((0, 2, 3))
                 + model.fc.weight.detach().double().pow(2).sum(0)).numpy()
    per_layer = [_lamp_by_hand(_rows(c.weight).pow(2).sum(1).numpy() * consumers) for c in (model.stem, model.project)]
    np.testing.assert_allclose(scores[stream.id], np.sum(per_layer, 0), rtol=1e-10)


def test_taylor_lamp_ranks_taylor_within_each_layer():
    model, a = _setup(Inverted(), seed=3)
    loader = _loader()
    scores = filter_scores("taylor-lamp", model, a, loader, batches=2)
    convs = {"stem": model.stem, "expand": model.expand, "dw": model.dw, "project": model.project}
    per_batch = _grads(model, list(loader)[:2], [c.weight for c in convs.values()])
    # Molchanov's squared estimate sum_s (g_s w_s)^2 per filter, averaged over the batches
    sq = {k: sum(_rows(g[i] * c.weight.detach().double()).pow(2).sum(1) for g in per_batch).numpy() / 2
          for i, (k, c) in enumerate(convs.items())}
    # the depthwise filter joins the expansion's layer; the stream sums its two writers' layers
    np.testing.assert_allclose(scores[a.group("expand").id], _lamp_by_hand(sq["expand"] + sq["dw"]), rtol=1e-6)
    np.testing.assert_allclose(scores[a.group("stem").id],
                               _lamp_by_hand(sq["stem"]) + _lamp_by_hand(sq["project"]), rtol=1e-6)
    # whatever a layer's raw scale, its most important filter scores 1: the knapsack compares ranks
    assert scores[a.group("expand").id].max() == 1.0
    with pytest.raises(InputError, match="needs data"):
        filter_scores("taylor-lamp", model, a)


# --------------------------------------------------------------------------------------------
# layer criteria


def _res_with_known_orders():
    model = _randomise(Res(), 2)
    with torch.no_grad():
        for blk, scale, gamma in zip(model.blocks, (3.0, 1.0, 2.0), (1.0, 2.0, 3.0)):
            for c in (blk.conv_a, blk.conv_b):
                c.weight.mul_(scale)
            for bn in (blk.bn_a, blk.bn_b):
                bn.weight.fill_(gamma)
    a = analyze(export_onnx(model, (1, 3, 8, 8), None))
    return model, a, removable_blocks(a.model, a.shapes)


@pytest.fixture(scope="module")
def res_blocks():
    return _res_with_known_orders()


def test_blocks_found(res_blocks):
    _, _, blocks = res_blocks
    assert [b.id for b in blocks] == ["blocks.0", "blocks.1", "blocks.2"]


def test_mean_layer_criteria(res_blocks):
    model, a, blocks = res_blocks
    l2 = layer_scores("mean:l2", model, a, blocks)
    bn = layer_scores("mean:bn-gamma", model, a, blocks)
    for b, blk in zip(blocks, model.blocks):
        norms = torch.cat([_rows(c.weight).norm(dim=1) for c in (blk.conv_a, blk.conv_b)])
        assert l2[b.id] == pytest.approx(norms.mean().item(), rel=1e-10)  # eq. 1
        gam = torch.cat([bn_.weight.detach().double().pow(2) for bn_ in (blk.bn_a, blk.bn_b)])
        assert bn[b.id] == pytest.approx(gam.mean().item(), rel=1e-10)  # eq. 3
    # group-level criteria: each filter takes its unit's score
    sp = layer_scores("mean:sp-lamp", model, a, blocks)
    units = filter_scores("sp-lamp", model, a)
    stream = "conv0"
    expect = (units[f"{blocks[0].id}.conv_a"].mean() + units[stream].mean()) / 2
    assert sp[blocks[0].id] == pytest.approx(expect, rel=1e-10)


def test_ensemble_ranks(res_blocks):
    model, a, blocks = res_blocks
    ids = [b.id for b in blocks]
    l2 = layer_scores("mean:l2", model, a, blocks)
    assert sorted(ids, key=l2.get) == ["blocks.1", "blocks.2", "blocks.0"]  # scales 1 < 2 < 3
    got = layer_scores("ensemble:mean:l2,bn-gamma", model, a, blocks)  # bare name = mean:bn-gamma
    assert got == {"blocks.0": 3 + 1, "blocks.1": 1 + 2, "blocks.2": 2 + 3}
    assert ranks({"a": 1.0, "b": 1.0, "c": 0.5}) == {"a": 2.5, "b": 2.5, "c": 1.0}


class Erase(nn.Module):
    """x + f(x) with f(x) = -x on channel 0 (relu(x0) - relu(-x0) = x0 exactly): erases channel 0."""

    def __init__(self, c, erase):
        super().__init__()
        self.conv_a = nn.Conv2d(c, c, 1, bias=False)
        self.conv_b = nn.Conv2d(c, c, 1, bias=False)
        with torch.no_grad():
            self.conv_a.weight.zero_()
            self.conv_b.weight.zero_()
            if erase:
                self.conv_a.weight[0, 0] = 1.0
                self.conv_a.weight[1, 0] = -1.0
                self.conv_b.weight[0, 0] = -1.0
                self.conv_b.weight[0, 1] = 1.0

    def forward(self, x):
        return F.relu(x + self.conv_b(F.relu(self.conv_a(x))))


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        self.keep = Erase(3, erase=False)
        self.erase = Erase(3, erase=True)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = self.erase(self.keep(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_imprinting_informative_block():
    model = Toy().eval()
    a = analyze(export_onnx(model, (1, 3, 8, 8), None))
    blocks = removable_blocks(a.model, a.shapes)
    assert [b.id for b in blocks] == ["keep", "erase"]
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.rand(64, 3, 8, 8, generator=g) * 0.5
    x[:, 0] += 2.0 * y[:, None, None]  # the label is channel 0's mean
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    got = layer_scores("imprinting", model, a, blocks, loader, batches=4)
    assert got["keep"] == pytest.approx(1.0 - 0.5)  # accuracy 1, minus chance (2 classes)
    assert got["erase"] < 0 < got["keep"]  # the erasing block loses accuracy
    # a smaller embedding length works the same way
    assert layer_scores("imprinting", model, a, blocks, loader, batches=4, embedding=12)["keep"] == pytest.approx(0.5)


def test_imprinting_accuracy_by_hand():
    e = np.array([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.9, 0.3]])
    labels = np.array([0, 0, 1, 1])
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)  # embeddings to unit length
    p = np.stack([unit[:2].mean(0), unit[2:].mean(0)], 1)  # eq. 6, class means ...
    p /= np.linalg.norm(p, axis=0)  # ... to unit length
    pred = np.argmax(unit @ p, 1)  # eq. 7
    assert pred.tolist() == [0, 0, 1, 0]  # sample 3 lies nearer class 0's direction
    assert imprinting_accuracy(e, labels) == 0.75


# --------------------------------------------------------------------------------------------
# errors


def test_errors(plain, res_blocks):
    model, a = plain
    with pytest.raises(InputError, match="unknown filter criterion 'nope': known are l1, l2, taylor"):
        filter_scores("nope", model, a)
    for name in ("taylor", "taylor-fm", "halp"):
        with pytest.raises(InputError, match=f"criterion {name} needs data: pass --data"):
            filter_scores(name, model, a)
    with pytest.raises(InputError, match="unknown aggregation 'median'"):
        filter_scores("l2", model, a, aggregate="median")
    with pytest.raises(InputError, match="yielded no batches"):
        filter_scores("taylor", model, a, loader=[])
    with pytest.raises(InputError, match="labelled data"):
        filter_scores("taylor", model, a, loader=[torch.randn(2, 3, 8, 8)])
    rmodel, ra, blocks = res_blocks
    with pytest.raises(InputError, match="unknown layer criterion 'mean:nope'.*imprinting"):
        layer_scores("mean:nope", rmodel, ra, blocks)
    with pytest.raises(InputError, match="unknown layer criterion 'bogus'"):
        layer_scores("bogus", rmodel, ra, blocks)
    with pytest.raises(InputError, match="unknown layer criterion 'imprintin'"):
        layer_scores("ensemble:l2,imprintin", rmodel, ra, blocks)
    with pytest.raises(InputError, match="imprinting needs data"):
        layer_scores("imprinting", rmodel, ra, blocks)
    with pytest.raises(InputError, match="taylor needs data"):
        layer_scores("mean:taylor", rmodel, ra, blocks)
    for e in (InputError("x"),):
        assert "\n" not in str(e)


def test_gradient_criteria_leave_module_as_found():
    model, a = _setup(Plain())
    ref = {c: filter_scores(c, model, a, _loader(), 2) for c in ("taylor", "taylor-fm", "halp")}
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    stats = model.bn1.running_mean.clone()
    for c, expect in ref.items():  # frozen parameters and train mode: same scores (eval mode inside)
        got = filter_scores(c, model, a, _loader(), 2)
        assert all(np.allclose(got[k], expect[k]) for k in expect), c
    assert model.training and not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.bn1.running_mean, stats)
