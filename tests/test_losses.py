import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from lightning_resnet.errors import ConfigError
from lightning_resnet.models.losses import CrossEntropyLoss, FocalLoss, balanced_class_weights


def test_focal_matches_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([0, 2])
    gamma = 2.0
    # By hand: p_t = softmax(logits)[target]; loss = mean(-(1 - p_t)^gamma * log p_t)
    p0 = math.exp(2.0) / (math.exp(2.0) + 1 + math.exp(-1.0))
    p1 = 1.0 / (2 * math.exp(0.5) + 1.0)
    expected = (-((1 - p0) ** gamma) * math.log(p0) - ((1 - p1) ** gamma) * math.log(p1)) / 2
    assert FocalLoss(gamma=gamma)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_equals_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item())


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [0.25, [0.2, 0.3, 0.5]], ids=["scalar", "per_class"])
def test_focal_alpha_matches_closed_form(gamma, alpha):
    logits = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-0.3, 1.2, 0.4]]
    target = [0, 2, 1]
    expected = 0.0
    for row, t in zip(logits, target, strict=True):  # -alpha_t (1 - p_t)^gamma log p_t, by hand
        p_t = math.exp(row[t]) / sum(math.exp(v) for v in row)
        alpha_t = alpha if isinstance(alpha, float) else alpha[t]
        expected += -alpha_t * (1 - p_t) ** gamma * math.log(p_t) / len(target)
    loss = FocalLoss(gamma=gamma, alpha=alpha)(torch.tensor(logits), torch.tensor(target))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[6.0, 0.0]])
    hard = torch.tensor([[0.2, 0.0]])
    target = torch.tensor([0])
    ratio_focal = FocalLoss(gamma=2.0)(easy, target) / FocalLoss(gamma=2.0)(hard, target)
    ratio_ce = F.cross_entropy(easy, target) / F.cross_entropy(hard, target)
    assert ratio_focal < ratio_ce / 10


def test_soft_targets_are_expectations_over_classes():
    logits = torch.randn(4, 3)
    hard = torch.tensor([0, 1, 2, 1])
    soft = F.one_hot(hard, 3).float()
    for loss in (FocalLoss(gamma=2.0), CrossEntropyLoss()):
        assert loss(logits, soft).item() == pytest.approx(loss(logits, hard).item(), rel=1e-6)


def test_invalid_parameters_name_the_key():
    with pytest.raises(ConfigError, match="loss.gamma must be >= 0"):
        FocalLoss(gamma=-1)
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ConfigError, match="loss.alpha has 2 entries but the model has 3 classes"):
        FocalLoss(alpha=[0.5, 0.5])(torch.randn(2, 3), torch.tensor([0, 1]))


def test_balanced_class_weights_follow_sklearn_formula():
    weights = balanced_class_weights([10, 30, 60])
    assert weights == pytest.approx([100 / 30, 100 / 90, 100 / 180])
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights, dtype=torch.float32))
    assert CrossEntropyLoss(class_weights=weights)(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ConfigError, match=r"classes \[1\] have no training samples"):
        balanced_class_weights([3, 0])


def test_balanced_class_weights_equal_sklearn_on_the_matching_labels():
    counts = [10, 30, 60]
    labels = np.repeat([0, 1, 2], counts)
    sklearn_weights = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=labels)
    closed_form = [sum(counts) / (len(counts) * c) for c in counts]
    weights = balanced_class_weights(counts)
    assert all(isinstance(w, float) for w in weights)
    assert weights == pytest.approx(sklearn_weights.tolist(), rel=1e-12)
    assert weights == pytest.approx(closed_form, rel=1e-12)


def test_class_weights_are_not_saved_in_checkpoints():
    assert "weight" not in CrossEntropyLoss(class_weights=[1.0, 2.0]).state_dict()
    assert "alpha" not in FocalLoss(alpha=[1.0, 2.0]).state_dict()
