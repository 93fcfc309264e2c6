"""The per-side read-outs behind Lemma 3.1 (engine ``_own_class_readouts``): what set, which class, which point."""

from __future__ import annotations

import numpy as np

from simulations.config import SimConfig
from simulations.engine import simulate

BASE = SimConfig(d=200, n=12, signal_strength=1.0, forget_size=3, unlearn_method="neggrad", alpha=0.5,
                 regime="from_scratch", unlearn_steps=10, unlearn_lr=0.5, n_test=200, log_points=11, rho=0.3)


def test_sides_partition_the_samples_and_gd_has_no_perturbation():
    res = simulate([BASE.replace(unlearn_optimizer="gd")])[0]
    t = res.trajectory
    n, nf = BASE.n, BASE.forget_size
    # the overall fraction is the sample-weighted mean of the two sides (R and F partition the samples)
    np.testing.assert_allclose((t["active_noise_fraction_retain"] * (n - nf) + t["active_noise_fraction_forget"] * nf)
                               / n, t["active_noise_fraction"], rtol=1e-12)
    # GD takes its gradient at W: |l'| at the "perturbed" point is |l'| at W
    np.testing.assert_array_equal(t["loss_slope_perturbed_forget"], t["loss_slope_forget"])
    np.testing.assert_array_equal(t["loss_slope_perturbed_retain"], t["loss_slope_retain"])


def test_sam_perturbation_lowers_the_forget_slope_and_retain_activity_at_the_start():
    """NegGrad ascends on F: eps raises F's margins (|l'_F| smaller at W+eps) and lowers R's own-class noise
    pre-activations (fewer R neurons active at W+eps than at W)."""
    sam, gd = simulate([BASE.replace(unlearn_optimizer="sam"), BASE.replace(unlearn_optimizer="gd")])
    s, g = sam.trajectory, gd.trajectory
    assert s["loss_slope_perturbed_forget"][0] < s["loss_slope_forget"][0]
    assert s["loss_slope_perturbed_retain"][0] > s["loss_slope_retain"][0]  # descent on R: eps lowers R's margins
    assert s["active_noise_fraction_retain"][0] < g["active_noise_fraction_retain"][0]
    assert s["active_noise_fraction_forget"][0] >= g["active_noise_fraction_forget"][0]


def test_own_class_coefficient_mean_is_over_the_right_side_and_class():
    """zeta_bar_{j,r,i} is 0 for j != y_i by construction, so the own-class entry is the sum over j; the logged mean
    is over the filters r and the samples of each side (not the other side, not a max)."""
    res = simulate([BASE.replace(unlearn_optimizer="gd")], save_coefficients=True)[0]
    zeta_bar = res.coefficients["zeta_bar"]  # (logged steps, 2, m, n): one shared noise vector per sample
    forget = np.zeros(BASE.n, bool)
    forget[res.trajectory["forget_indices"]] = True
    own = zeta_bar.sum(axis=1).mean(axis=1)  # (steps, n): own-class entry, mean over r
    np.testing.assert_allclose(res.trajectory["own_noise_coef_mean_retain"], own[:, ~forget].mean(axis=1),
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.trajectory["own_noise_coef_mean_forget"], own[:, forget].mean(axis=1),
                               rtol=1e-10, atol=1e-14)
    assert (own[-1, ~forget].mean() > 0) and (own[-1, forget].mean() < 0)  # descent memorises R, ascent unlearns F
