"""Compile passes, one per file, each a function from graph to graph (lowering: graph to plan)."""

from .autodiff import autodiff, gradients  # noqa: F401
from .constant_fold import constant_fold  # noqa: F401
from .cse import cse  # noqa: F401
from .dce import dce  # noqa: F401
from .dim_constraints import dim_constraints  # noqa: F401
from .fuse import fuse  # noqa: F401
from .fold_batch_norm import fold_batch_norm  # noqa: F401
from .fuse_batch_norm import fuse_batch_norm  # noqa: F401
from .save_pool_argmax import save_pool_argmax  # noqa: F401
from .fuse_cross_entropy import fuse_cross_entropy  # noqa: F401
from .pool_before_bias import pool_before_bias  # noqa: F401
from .fuse_updates import fuse_updates  # noqa: F401
from .lower import lower  # noqa: F401
from .plan_memory import check_memory_plan, plan_memory  # noqa: F401
from .flatten_state import flatten_state  # noqa: F401
from .pipeline import (  # noqa: F401
    STEP_RULES, Pass, StepRule, check_pipeline, default_pipeline, finish_plan, optional_passes, plan_passes,
    register_step_rule, run_pipeline, run_to_plan)
from .resolve_modes import mode_switches, resolve_modes  # noqa: F401
from .schedule import schedule  # noqa: F401
from .simplify import simplify  # noqa: F401
from .strip_training import strip_training  # noqa: F401
from .clip_gradients import clip_gradients  # noqa: F401
from .decompose import decompose  # noqa: F401
from .optimizer_updates import OptimizerVariables, optimizer_updates, updated_parameters  # noqa: F401
from .state_updates import state_updates  # noqa: F401
from .verify import verify  # noqa: F401
