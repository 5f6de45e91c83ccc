"""Role nc: not built yet."""

NOT_BUILT = "the node controller arrives with the instances issue"


def create(ctx):  # type: ignore[no-untyped-def]
    raise RuntimeError(NOT_BUILT)
