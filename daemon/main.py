"""``neuroauthd`` entry point.

The service (LSL inlet, streaming engine, scoring, MQTT) is not part of this
release; until it is, the command says so and exits with status 2 rather than
pretending to run.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "neuroauthd: the authentication service is not available in this release; "
        "use `neuroauth evaluate` to measure a model on recordings.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
