"""Closed-loop alpha control against simulated plants, the Steerer knob, and the real simulator."""

from __future__ import annotations

import numpy as np
import pytest

from arrcoc_steer.control import AlphaController, ControllerConfig, SteererKnob
from arrcoc_steer.errors import ConfigError, SteeringError

REF = 0.15  # m/s, the unsteered policy's speed


def run(plant, config: ControllerConfig, steps: int = 150, seed: int = 0):
    """Drive ``plant(alpha, rng) -> speed`` in closed loop; returns (controller, speeds)."""
    rng = np.random.default_rng(seed)
    ctl = AlphaController(config, reference=REF)
    speeds = []
    for _ in range(steps):
        speeds.append(plant(ctl.alpha, rng))  # the action of this step was made with the current alpha
        ctl.update(speeds[-1])
    return ctl, np.array(speeds)


def exp_plant(gain=0.3, noise=0.05):
    return lambda a, rng: REF * np.exp(gain * a) * (1 + noise * rng.standard_normal())


def tanh_plant(a, rng):  # monotone, saturating at +80%
    return REF * (1 + 0.8 * np.tanh(a / 4)) * (1 + 0.05 * rng.standard_normal())


@pytest.mark.parametrize("plant", [exp_plant(0.3), exp_plant(1.0), tanh_plant], ids=["exp-weak", "exp-strong", "tanh"])
@pytest.mark.parametrize("seed", [0, 1])
def test_converges_and_holds_the_band(plant, seed):
    ctl, speeds = run(plant, ControllerConfig(target_ratio=1.3, alpha_max=10.0), seed=seed)
    held = speeds[60:] / REF
    assert abs(held.mean() / 1.3 - 1) < 0.03  # the mean sits on the target
    assert np.mean(np.abs(held / 1.3 - 1) <= 0.1) > 0.85  # single noisy steps inside +-10%
    assert 0.0 <= min(ctl.alphas) and max(ctl.alphas) <= 10.0


def test_a_decreasing_knob_needs_direction_minus_one():
    slow_concept = lambda a, rng: REF * np.exp(-0.4 * a) * (1 + 0.05 * rng.standard_normal())
    ctl, speeds = run(slow_concept, ControllerConfig(target_ratio=0.7, direction=-1))
    assert abs(speeds[60:].mean() / REF / 0.7 - 1) < 0.03 and ctl.alpha > 0


def test_anti_windup_recovers_fast_after_saturation():
    reachable = {"yes": False}

    def plant(a, rng):  # blocked (e.g. contact) until step 80: no alpha makes it faster
        return REF * (np.exp(0.5 * a) if reachable["yes"] else 1.0)

    cfg = ControllerConfig(target_ratio=1.3, alpha_max=3.0)
    ctl = AlphaController(cfg, reference=REF)
    for t in range(160):
        reachable["yes"] = t >= 80
        ctl.update(plant(ctl.alpha, None))
    assert ctl.alphas[79] == 3.0  # pinned at the limit, not beyond
    after = np.abs(np.array(ctl.ratios[80:]) / 1.3 - 1) <= 0.1
    settle = int(np.argmax(after))
    assert settle < 25 and after[settle + 10 :].all()  # a wound-up integrator would hold alpha at 3 for ~80 steps


def test_pauses_hold_alpha_instead_of_winding_up():
    ctl = AlphaController(ControllerConfig(target_ratio=1.3), reference=REF)
    for _ in range(30):
        ctl.update(REF * 1.3 * np.exp(0.3 * ctl.alpha) / np.exp(0.3 * 1.0))
    before = ctl.alpha
    for _ in range(20):  # the gripper closes: the hand stands still on purpose
        ctl.update(0.0)
    assert ctl.alpha == pytest.approx(before, abs=1e-9)


def test_knob_is_called_with_every_new_alpha():
    seen = []
    ctl = AlphaController(ControllerConfig(alpha_init=1.0, alpha_max=2.0), reference=REF, knob=seen.append)
    ctl.update(REF)
    assert seen[0] == 1.0 and len(seen) == 2 and seen[1] > 1.0
    ctl.update(2 * REF, reference=2 * REF)  # a reference that changes along the episode
    assert ctl.ratios[-1] == 1.0


@pytest.mark.parametrize("bad, match", [
    (dict(alpha_init=-1.0), "alpha_min <= alpha_init"),
    (dict(kp=0.0, ki=0.0), "not both 0"),
    (dict(direction=2), "direction must be"),
    (dict(tolerance=1.5), "tolerance must be in"),
])  # fmt: skip
def test_config_errors_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        ControllerConfig(**bad)
    with pytest.raises(ConfigError, match="reference must be"):
        AlphaController(reference=0.0)


def test_steerer_knob_reattaches_and_detaches():
    import torch

    from arrcoc_steer.models.tiny import example_inputs, tiny_model
    from arrcoc_steer.steering import Intervention

    model = tiny_model("llama")
    x = example_inputs(model)
    with torch.no_grad():
        plain = model(**x).logits
        with SteererKnob(model, lambda a: [Intervention(((0, 5), (1, 7)), alpha=a, name="k")]) as knob:
            knob(2.0)
            at2 = model(**x).logits
            knob(2.0 + 1e-6)  # below the resolution: the same Steerer stays
            knob(8.0)
            at8 = model(**x).logits
        after = model(**x).logits
    assert not torch.equal(plain, at2) and not torch.equal(at2, at8)
    assert torch.equal(plain, after)  # nothing left attached
    assert knob.counts == {"k": 32}  # 2 calls x 2 layers x 8 positions
    with pytest.raises(SteeringError, match="never fired"):
        with SteererKnob(model, lambda a: [Intervention(((0, 5),), alpha=a)]) as knob:
            knob(1.0)


def test_closed_loop_holds_plus_30_percent_speed_in_the_simulator(tmp_path):
    """The expert's own knob (translation gain 2**alpha) under closed-loop control, paired with the
    unsteered expert on the same seeds: the length-controlled speed lands within +-10% of +30% and
    success stays >= 90% of the unsteered policy's."""
    from arrcoc_steer.eval import ClosedLoop, ExpertPolicy, evaluate

    loop = ClosedLoop(controller=ControllerConfig(target_ratio=1.3, alpha_min=-1.0, alpha_max=1.5))
    r = evaluate(ExpertPolicy(), ["LiftRedBlock", "PutRedBlockInTray"], ["unsteered", loop], seeds=4,
                 out_dir=tmp_path, backend="serial", progress=False)
    for metric in ("speed_w", "speed_mean"):
        ratio = r.mean(loop.name, metric) / r.mean("unsteered", metric)
        assert abs(ratio / 1.3 - 1) <= 0.1, (metric, ratio)
    assert r.mean(loop.name, "success") >= 0.9 * r.mean("unsteered", "success")
    rows = [x for x in r.rows if x["condition"] == loop.name]
    assert all(x["reference"] > 0 and 0 <= x["in_band"] <= 1 for x in rows)
    rec = r.out_dir and __import__("arrcoc_steer.eval", fromlist=["RunFolder"]).RunFolder(tmp_path).load_record(
        f"LiftRedBlock__{loop.name}__{rows[0]['seed']}")
    assert rec.traces["alpha"].shape == (rec.length,) and rec.traces["alpha"].max() > 0
