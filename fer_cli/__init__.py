"""The ``fer`` command: the top of the house, composing the subcommands each package registers.

No package imports this one; each package offers ``add_parsers(subparsers)`` in its own ``cli``
module and keeps its heavy imports (torch, Ray) inside the command functions, so ``fer --help``
answers at once.
"""
