"""The bottom layer: `Settings` (every setting, read once) and the errors with their HTTP statuses.

Imports nothing of this project.
"""
