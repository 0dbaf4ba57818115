"""The bottom layer: `Settings` (every setting, read once), the errors with their HTTP statuses, and
the shape of a Label Studio task (`core.tasks.Task`).

Imports nothing of this project.
"""
