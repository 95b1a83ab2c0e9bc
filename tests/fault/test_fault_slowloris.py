"""
Regression test (found by the fault suite, fixed with a per-command deadline).
Slowloris: a line that never ends, dribbled one byte a second, keeps a session open forever
because the idle timeout is a libevent read timeout that every byte re-arms.
"""

from faultlib import raise_nofile, still_serves
from test_fault_slow import GOOD_SOURCE, IDLE, LIMITS, N_SLOW, Dribblers


def test_slowloris_cut_by_idle_timeout(postern_factory):
    """A line that never ends, one byte a second, is not activity: each slow connection is closed
    within a bound of the idle timeout, however steadily it dribbles."""
    old = raise_nofile(4096)
    p = postern_factory(limits=LIMITS)
    drib = Dribblers(p.smtp_port)
    try:
        bound = IDLE * 3 + 2
        for _ in range(bound + 2):
            drib.tick()
            if drib.open_count() == 0:
                break
        still_open = drib.open_count()
        assert still_open == 0, (
            "%d of %d slow connections sending one byte a second were still open after %d s "
            "with idle_timeout=%ds" % (still_open, N_SLOW, bound + 2, IDLE))
        worst = max(drib.closed_at[s] - drib.opened[s] for s in drib.socks)
        assert worst <= bound, worst
    finally:
        drib.close()
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, old)
    still_serves(p, source=GOOD_SOURCE)
