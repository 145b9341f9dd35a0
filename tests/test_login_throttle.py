"""Login throttling without lockouts (issue #20): failures count per (client, name) and per
client, so no one else's wrong passwords refuse the real user from their own browser, one
client guessing across names is slowed, and the tables stay bounded. Judged against a model of
who failed where, over generated sequences of attempts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdocs.auth import LoginThrottle, log_in, login_client
from sparkdocs.config import Settings
from sparkdocs.errors import LoginError

PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-22", "carol": "carol-pass-3"}
HOME = "192.0.2.10"  # the real user's own browser
OTHERS = ["198.51.100.1", "198.51.100.2", "203.0.113.9", "2001:db8::5"]


class Users:
    """The accounts, without the slow hash: the throttle is what is judged here."""

    def authenticate(self, name: str, password: str) -> str | None:
        return name if PASSWORDS.get(name) == password else None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def attempt(throttle: LoginThrottle, client: str, name: str, password: str) -> str:
    """'ok', 'wrong' or 'paused'."""
    try:
        log_in(Users(), throttle, name, password, client=client)  # type: ignore[arg-type]
    except LoginError as exc:
        return "paused" if "Too many" in str(exc) else "wrong"
    return "ok"


others_attempt = st.tuples(st.sampled_from(OTHERS), st.sampled_from([*PASSWORDS, "root", "ALICE"]),
                           st.sampled_from(["guess", "alice-pass-1", "123456", ""]),
                           st.floats(0, 120))
step = st.one_of(others_attempt.map(lambda a: ("other", a)),
                 st.floats(0, 120).map(lambda wait: ("home", wait)))


@settings(max_examples=100, deadline=None)
@given(st.lists(step, max_size=120))
def test_no_other_clients_failures_refuse_the_real_user_from_their_own_browser(steps):
    clock = Clock()
    throttle = LoginThrottle(free=5, client_free=20, lock_s=30.0, clock=clock)
    for kind, value in steps:
        if kind == "home":
            clock.now += value
            assert attempt(throttle, HOME, "alice", PASSWORDS["alice"]) == "ok"
        else:
            client, name, password, wait = value
            clock.now += wait
            attempt(throttle, client, name, password)
    assert attempt(throttle, HOME, "alice", PASSWORDS["alice"]) == "ok"


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.from_regex(r"[a-z][a-z0-9.]{0,20}", fullmatch=True), min_size=21,
                      max_size=60, unique=True),
       gap=st.floats(0, 1))
def test_one_client_guessing_across_names_is_slowed(names, gap):
    clock = Clock()
    throttle = LoginThrottle(free=5, client_free=20, lock_s=30.0, clock=clock)
    outcomes = []
    for name in names:  # one wrong password per name: no per-name pause ever comes
        outcomes.append(attempt(throttle, OTHERS[0], name, "guess"))
        if outcomes[-1] == "paused":
            break
        clock.now += gap
    assert outcomes.index("paused") == 20  # the 21st name, within the pause
    assert throttle.wait_s(OTHERS[0], "anyone") > 0
    # the pause is the guesser's alone: the real user at home, and bob elsewhere, get in
    assert attempt(throttle, HOME, "alice", PASSWORDS["alice"]) == "ok"
    assert attempt(throttle, OTHERS[1], "bob", PASSWORDS["bob"]) == "ok"


def test_pauses_double_for_one_client_and_one_name():
    clock = Clock()
    throttle = LoginThrottle(free=3, client_free=100, lock_s=30.0, clock=clock)
    waits = []
    for _ in range(3):
        for _ in range(3):
            assert attempt(throttle, OTHERS[0], "alice", "guess") == "wrong"
        waits.append(throttle.wait_s(OTHERS[0], "alice"))
        assert attempt(throttle, OTHERS[0], "alice", PASSWORDS["alice"]) == "paused"
        clock.now += waits[-1] + 0.01
    assert waits == [30.0, 60.0, 120.0]


@pytest.mark.parametrize("distinct", ["clients", "names", "both"])
def test_the_tables_stay_bounded_after_100000_distinct_clients_or_names(distinct):
    clock = Clock()
    throttle = LoginThrottle(size=1000, clock=clock)
    for i in range(100_000):
        client = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" if distinct != "names" else "10.0.0.1"
        name = f"user{i}" if distinct != "clients" else "alice"
        throttle.failed(client, name)
        clock.now += 0.001
    assert throttle.entries <= 2 * 1000
    assert attempt(throttle, HOME, "alice", PASSWORDS["alice"]) == "ok"


def test_failures_are_forgotten_after_a_day():
    clock = Clock()
    throttle = LoginThrottle(free=5, client_free=20, lock_s=30.0, forget_s=86_400, clock=clock)
    for _ in range(19):
        throttle.failed(OTHERS[0], "alice")
        clock.now += 40
    clock.now += 86_401
    assert throttle.wait_s(OTHERS[0], "alice") == 0
    throttle.failed(OTHERS[0], "bob")  # a fresh count: one failure, no pause
    assert throttle.wait_s(OTHERS[0], "bob") == 0


def test_the_client_behind_a_trusted_proxy_is_the_address_it_saw():
    config = Settings(trusted_proxies="10.0.0.2")
    forwarded = {"X-Forwarded-For": "6.6.6.6, 192.0.2.10"}  # a claim, then what the proxy saw
    assert login_client(forwarded, peer="10.0.0.2", settings=config) == "192.0.2.10"
    assert login_client(forwarded, peer="198.51.100.1", settings=config) == "198.51.100.1"
    assert login_client({}, peer="10.0.0.2", settings=config) == "10.0.0.2"
