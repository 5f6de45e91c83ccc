"""Role cc: not built yet."""

NOT_BUILT = "the cluster controller arrives with the instances issue"


def create(ctx):  # type: ignore[no-untyped-def]
    raise RuntimeError(NOT_BUILT)
