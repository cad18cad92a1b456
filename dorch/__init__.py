"""dorch: run AI-agent tasks on a fleet of one-task-per-process workers."""

__version__ = "0.1.0"
