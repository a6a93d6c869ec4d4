"""The whole daemon at 1 to N headsets: real LSL outlets, mosquitto, neuroauthd, a score subscriber.

    python bench/daemon_scale.py --headsets 1,16,64 --duration 60 --json bench/daemon_scale.json \\
        [--plot bench/daemon_scale.png] [--montage default|10-20] [--work DIR]

The same as ``neuroauth bench --daemon``; what it measures and how is in
``neuroauth/bench_daemon.py``. LSL is configured loopback-only before anything else, here
and in every process it starts.
"""

from __future__ import annotations

import sys

from neuroauth.bench_daemon import main

if __name__ == "__main__":
    sys.exit(main())
