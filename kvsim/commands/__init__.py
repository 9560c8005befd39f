"""CLI commands: each module registers its subparser and a ``run(args)`` function."""
