"""Export and load compiled plans: one safetensors file, checked on the way in."""

from .atomic import atomic_write  # noqa: F401
from .plan_file import FORMAT, FORMAT_VERSION, LoadedPlan, file_summary, load_parts, plan_bytes, save_plan  # noqa: F401
