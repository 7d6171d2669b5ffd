class WeightspaceError(Exception):
    """A user's mistake (bad config, bad data, missing file).

    Reported as one line naming the file, key or dataset, never with a traceback.
    """
