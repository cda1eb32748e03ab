"""A run's live view with a question in the middle, as the engine asks it: for
tests/unit/test_live_view.py. `confirm` asks one yes/no question; `approve` asks for two hosts
(the select, then the checkbox). The answer shows up as a row of the live view, which stays
until Enter is pressed."""

from __future__ import annotations

import sys
import time

from nixtasks.cli.render import progress_for
from nixtasks.fleet.progress import Progress
from nixtasks.host.prompts import prompter_for


def main(kind: str) -> None:
    progress: Progress
    progress, view = progress_for(print)
    with view:
        asker = view.asking(prompter_for(False))
        for host in ("web1", "web2"):
            progress.stage(host, "copying")
        time.sleep(1.0)  # the live view draws its rows a few times first
        answer: object
        try:
            if kind == "confirm":
                answer = asker.confirm("Switch web1 (root@web1) to nixos-system-web1-1.1?")
            else:
                answer = ",".join(asker.approve("Switch web1, web2 (2 hosts)?", ["web1", "web2"]).hosts) or "none"
        except KeyboardInterrupt:
            answer = "interrupted"
        progress.stage("web1", f"answered {answer}")
        input()


if __name__ == "__main__":
    main(sys.argv[1])
