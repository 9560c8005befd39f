"""ALISA-style three-phase KV placement: where the cache lives, step by step (arXiv 2403.17312
Algorithm 2), and what it buys against FlexGen-style and vLLM-style policies in the same time
model. ``schedule()`` is the entry; ``inputs`` -> ``placement``/``evaluate`` -> ``optimize``."""
from .baselines import Baseline, flexgen, vllm
from .evaluate import Evaluation, evaluate
from .inputs import StepInputs, step_inputs
from .optimize import Grid, optimize
from .placement import Placement
from .run import ScheduleResult, schedule

__all__ = ["Baseline", "Evaluation", "Grid", "Placement", "ScheduleResult", "StepInputs", "evaluate",
           "flexgen", "optimize", "schedule", "step_inputs", "vllm"]
