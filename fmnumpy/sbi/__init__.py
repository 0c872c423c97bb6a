"""Simulation-based inference with flow matching (docs/sbi.md): the sbibm tasks written
from their definitions (``tasks.py``) and flow-matching posterior estimation
(``posterior.py``), scored by the classifier two-sample test (``metrics.c2st``)."""
from fmnumpy.sbi.posterior import PosteriorFlow, select_posterior
from fmnumpy.sbi.tasks import TASKS, get_task, simulate

__all__ = ["PosteriorFlow", "TASKS", "get_task", "select_posterior", "simulate"]
