"""Training-ready batches: recipes (server side), row layouts, tensors and trainer adapters (client side).

The server runs :func:`apply_recipe` on the groups it selected and answers JSON (CONTRACT §4); clients
turn that JSON into rows (:func:`to_step_rows`, :func:`to_trajectory_rows`), arrays (:func:`tensorize`)
or trainer containers (:func:`to_verl`, :func:`to_hf_dataset`, :func:`to_trl_dpo_rows`).
"""

from steplake.batches.adapters import VerlBatch, to_hf_dataset, to_trl_dpo_rows, to_verl
from steplake.batches.errors import (
    BatchError,
    ContinuityMismatchError,
    SequenceTooLongError,
    UnknownRecipeError,
)
from steplake.batches.layout import (
    LAYOUTS,
    layout_summary,
    row_meta,
    to_rows,
    to_step_rows,
    to_trajectory_rows,
)
from steplake.batches.pairs import preference_pairs, reward_pairs
from steplake.batches.recipes import (
    RECIPES,
    RecipeResult,
    apply_recipe,
    drop_zero_variance,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    select_sft,
    whiten,
)
from steplake.batches.tensorize import BACKENDS, MODES, tensorize, tensorize_rows

__all__ = [
    "BACKENDS",
    "LAYOUTS",
    "MODES",
    "RECIPES",
    "BatchError",
    "ContinuityMismatchError",
    "RecipeResult",
    "SequenceTooLongError",
    "UnknownRecipeError",
    "VerlBatch",
    "apply_recipe",
    "drop_zero_variance",
    "grpo_advantages",
    "layout_summary",
    "preference_pairs",
    "reinforce_pp_advantages",
    "reward_pairs",
    "rloo_advantages",
    "row_meta",
    "select_sft",
    "tensorize",
    "tensorize_rows",
    "to_hf_dataset",
    "to_rows",
    "to_step_rows",
    "to_trajectory_rows",
    "to_trl_dpo_rows",
    "to_verl",
    "whiten",
]
