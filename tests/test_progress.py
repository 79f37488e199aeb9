"""Progress of `flywheel run`: a bar on a terminal, a line per finished job in a log."""

import io

from flywheel.launchers.local import Progress


def test_progress_in_a_log_prints_a_line_per_finished_job():
    log = io.StringIO()  # not a terminal
    p = Progress("camp", stream=log)
    assert p.bar is None
    for done, total, running in [(0, 5, ["camp r0 seeds"]), (0, 5, ["camp r0 seeds"]),
                                 (0, 5, ["camp r0 seeds"]), (1, 5, ["camp r0 oracle"]),
                                 (1, 5, ["camp r0 oracle"]), (1, 7, []), (7, 7, [])]:
        p.update(done, total, running)
    p.close()
    assert log.getvalue().splitlines() == [
        "camp: 0/5 jobs done; running: camp r0 seeds",
        "camp: 1/5 jobs done; running: camp r0 oracle",
        "camp: 1/7 jobs done",
        "camp: 7/7 jobs done",
    ]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_is_a_bar():
    term = _Terminal()
    p = Progress("camp", stream=term)
    assert p.bar is not None
    p.update(3, 9, ["camp r1 filter"])
    assert (p.bar.n, p.bar.total) == (3, 9)
    p.close()
    assert "camp" in term.getvalue() and "3/9" in term.getvalue()
