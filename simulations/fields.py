"""What each configuration field means: the text behind ``--set`` help, ``python -m simulations fields`` and the
"did you mean" of an unknown key. A test checks that every field of :class:`~simulations.config.SimConfig` has a line
here, so a new field cannot ship undocumented."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

FIELD_HELP: dict[str, str] = {
    "backend": "gram (exact, on coefficients; cost free of d) or weights (full d-dimensional filters, the reference)",
    "n": "number of training samples",
    "d": "dimension of each patch",
    "P": "patches per sample: one signal patch, P-1 noise patches",
    "m": "filters per class (2m filters in all)",
    "signal_strength": "||mu||, the norm of the signal vector (U calls it ||phi||)",
    "sigma_p": "noise scale: xi ~ N(0, sigma_p^2 I), projected off mu when noise_projected",
    "sigma_0": "initial filters ~ N(0, sigma_0^2 I) (init=gaussian)",
    "label_flip": "p, probability that a training or test label is flipped (test error floor p)",
    "noise_projected": "noise orthogonal to mu ((Cao)/(K)) instead of isotropic (the (K) authors' script)",
    "shared_noise": "the P-1 noise patches of a sample are one vector (else independent draws)",
    "activation": "relu, or polyrelu max(0, z)^q ((Cao))",
    "q": "exponent of polyrelu",
    "filter_bias": "a trainable bias per filter (the (K) authors' network)",
    "init": "gaussian N(0, sigma_0^2) or torch_uniform U(+-1/sqrt(d)) (PyTorch's default; weights backend)",
    "patch_aggregation": "sum or mean over the patches",
    "output_scale": "inv_m (second layer +-1/m) or one (the (K) authors' network)",
    "optimizer": "pretraining optimizer: gd (full batch), sgd (batch_size), sam",
    "lr": "pretraining learning rate",
    "rho": "SAM radius (or its constant under rho_rule=chen)",
    "rho_rule": "fixed (radius rho) or chen (rho m sqrt(B) / (P sigma_p sqrt d), (C)'s scale)",
    "sam_steps": "SAM for the first sam_steps pretraining steps only, then the base step (0 = every step)",
    "sam_adaptive": "ASAM: eps = rho |w|^2 g / || |w| g || (weights backend)",
    "sam_sign": "min (SAM) or max (sharpness maximisation) in g + s lambda (g(W+eps) - g)",
    "sam_lambda": "lambda of the generalised SAM step",
    "batch_size": "SGD/SAM batch size; 0 = full batch",
    "steps": "pretraining steps",
    "seed": "seed of the data, the initial filters and every draw",
    "n_test": "fresh test samples per run (Monte-Carlo test error and its standard error)",
    "forget_size": "|F|, samples to forget",
    "forget_select": "random subset, or the label-flipped samples first (noisy)",
    "forget_target": "Random Label's target for F: flip (-y) or uniform (+-1 at random)",
    "unlearn_method": "none, neggrad, rl, ga, ft, retrain or sharp_minmax",
    "unlearn_optimizer": "unlearning optimizer: gd, sgd or sam",
    "alpha": "retain weight of NegGrad / Sharp MinMax: alpha L(R) - (1 - alpha) L(F)",
    "unlearn_steps": "unlearning steps",
    "unlearn_lr": "unlearning learning rate",
    "mask_fraction": "Sharp MinMax: fraction of parameters in the forget part W_F",
    "mask_granularity": "Sharp MinMax split per filter or per coordinate (weights backend)",
    "regime": "pretrain_then_unlearn, or from_scratch (unlearning objective from the initial filters)",
    "precision": "float64 or float32",
    "log_points": "trajectory points logged over the run",
}


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_fields(defaults: dict, types: dict, help_text: dict[str, str] = FIELD_HELP) -> str:
    """One line per field: ``name  type  default  meaning``."""
    width = max(map(len, defaults))
    lines = [f"{'field':{width}}  {'type':5}  {'default':>22}  meaning"]
    for name, value in defaults.items():
        lines.append(f"{name:{width}}  {types[name].__name__:5}  {value!r:>22}  {help_text.get(name, '')}")
    return "\n".join(lines)
