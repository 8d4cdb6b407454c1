"""Tasks and data: loaders for public formats and built-in generated tasks.

Every row a loader or task yields is a dict with ``prompt`` (a list of chat messages
``{"role", "content"}``) plus the columns its rewards read (``answer``, ``tests``, ...).
"""

from gdpo.data.base import Task, get_task, register_task, task_names

__all__ = ["Task", "get_task", "register_task", "task_names"]
