"""The `axw` command from a checkout: ``python cli.py demo`` runs what the installed ``axw demo`` runs.

The command line itself is :mod:`axwarehouse.cli`; the package installs one namespace, ``axwarehouse``.
"""

from axwarehouse.cli import main

if __name__ == "__main__":
    main()
