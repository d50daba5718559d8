"""What rank 0 tells the user: progress while it runs, then the summary, the timing report, the Gantt chart."""

from .gantt import MATPLOTLIB_MISSING, gantt_chart, level_spans, matplotlib_available
from .progress import Progress, behind_a_terminal
from .screening import format_screening
from .summary import HARTREE_TO_KCAL, summary
from .timing import TaskTiming, format_timing, run_report, timeline_records, timing_report, write_report

__all__ = ["HARTREE_TO_KCAL", "MATPLOTLIB_MISSING", "Progress", "TaskTiming", "behind_a_terminal", "format_screening", "format_timing",
           "gantt_chart", "level_spans", "matplotlib_available", "run_report", "summary", "timeline_records",
           "timing_report", "write_report"]
