"""Learning from Label Studio annotations: datasets, training, evaluation, versions, jobs."""
