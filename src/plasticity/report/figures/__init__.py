"""The report's figures: `REGISTRY` (name -> `Figure`, filled by ``@figure`` in the theme modules: losses,
downstream, probes, rank, norms) and `ORDER`, the sequence the report shows them in.

Adding a figure: a draw function decorated with ``@figure(name, caption, rows=..., needs=...)`` in a theme module
(or a new one imported here) and its name in `ORDER` (a figure registered elsewhere comes after those of `ORDER`);
``build_report`` needs no change.
"""

from __future__ import annotations

from plasticity.report.figures import downstream, losses, norms, probes, rank  # noqa: F401 (registers the figures)
from plasticity.report.figures.base import REGISTRY, Canvas, Figure, Missing, Needs, figure

ORDER = (
    "fig1_val_loss_vs_wd",
    "fig2_headline_vs_wd",
    "fig2_avg_{item}_metrics_vs_wd",
    "fig2_{item}_metrics_vs_wd",
    "fig3_val_loss_vs_metric",
    "fig4_probe_{item}",
    "fig5_rank_over_training",
    "fig6_gaps_vs_wd",
    "fig6_loss_curves",
    "fig6_train_val_losses_vs_wd",
    "fig5_rank_layers_over_training",
    "fig7_norm_fraction",
    "fig8_stability_plasticity",
    "fig9_plasticity_over_pretraining",
    "fig3_val_loss_vs_{item}",
    "fig2_per_finetune_setting",
    "fig2_average_over_finetune_settings",
    "fig4_probe_average",
    "fig4_probe_vs_headline",
    "fig7_group_norms_vs_wd",
    "fig8_upstream_accuracy",
)


def figures() -> list[Figure]:
    """The registered figures in report order: those of `ORDER`, then any other registered one (e.g. by a
    user's module with ``@figure``) in registration order."""
    return [REGISTRY[name] for name in ORDER] + [f for name, f in REGISTRY.items() if name not in ORDER]


__all__ = ["ORDER", "REGISTRY", "Canvas", "Figure", "Missing", "Needs", "figure", "figures"]
