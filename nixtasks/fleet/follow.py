"""After an emergency switch: the hosts' new warnings and errors, as they come, for a while."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..host import commands
from ..host.runner import Runner
from ..models import Host


def follow(hosts: Sequence[Host], seconds: float, runner: Runner) -> None:
    """`journalctl --follow --priority=warning` on every host for `seconds`; Ctrl-C ends it early."""
    threads = [threading.Thread(target=runner.run, args=(commands.follow_journal(), h.target), daemon=True,
                                kwargs={"label": h.name, "stream": True, "check": False, "timeout": seconds})
               for h in hosts]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        runner.stop_all()
