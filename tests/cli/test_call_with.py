"""``call_with``: a call built from parsed options named like the parameters."""

from jsonargparse import Namespace

from aras400k.cli import call_with


def _pass(in_dir: str, out: str, limit: int | None = None, max_requests: int = 10) -> dict:
    return {"in_dir": in_dir, "out": out, "limit": limit, "max_requests": max_requests}


def test_the_first_namespace_holding_a_name_wins_and_given_arguments_win_over_both():
    group = Namespace(max_requests=3, limit=1, action="write")
    top = Namespace(out="caps.jsonl", limit=7, input="data/x")
    assert call_with(_pass, group, top, in_dir="data/x") == {
        "in_dir": "data/x",
        "out": "caps.jsonl",
        "limit": 1,
        "max_requests": 3,
    }
    assert call_with(_pass, top, group, in_dir="d", limit=None)["limit"] is None


def test_a_parameter_without_an_option_keeps_its_default():
    assert call_with(_pass, Namespace(out="o"), in_dir="i")["max_requests"] == 10
