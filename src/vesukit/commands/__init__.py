"""One module per `vesukit` command: ``register(subparsers)`` and ``run(args) -> int``."""
