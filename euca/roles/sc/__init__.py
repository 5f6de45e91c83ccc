"""Role sc: not built yet."""

NOT_BUILT = "the storage controller (EBS volumes) is not built yet"


def create(ctx):  # type: ignore[no-untyped-def]
    raise RuntimeError(NOT_BUILT)
