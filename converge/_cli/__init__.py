"""Private helpers of :mod:`converge.cli`; the command definitions stay there."""
