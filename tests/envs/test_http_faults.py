"""HTTP fault matrix of the reliability bench (issue 17): every HTTP client against every fault of a
local fake server on 127.0.0.1 ends contained: a clean error or a clean success, within its deadline,
with bounded memory."""

from __future__ import annotations

import time

import pytest

from creditgym.benchmarks import reliability_http as rh
from creditgym.benchmarks.reliability_http import http_fault_matrix


@pytest.fixture(scope="module")
def rows():
    t0 = time.monotonic()
    out = http_fault_matrix(timeout_s=0.4)  # room for four fast retries of a 500 on a loaded machine
    return out, time.monotonic() - t0


def test_every_client_contains_every_fault(rows):
    out, _ = rows
    assert {(r["client"], r["fault"]) for r in out} == {(c, f) for c in rh.CLIENTS for f in rh.FAULTS}
    bad = [r for r in out if r["outcome"] not in ("contained", "skipped")]
    assert not bad, bad
    assert all(r["area"] == "http" and isinstance(r["seconds"], float) for r in out)


def test_rows_show_the_stable_kinds(rows):
    out, _ = rows
    by = {(r["client"], r["fault"]): r["detail"] for r in out}
    for client in ("json_client", "search_retriever", "openai_policy", "redteam_victim", "redteam_judge", "simsearch_llm"):
        assert "body_too_large" in by[client, "huge_body"], by[client, "huge_body"]
        assert "bad_response" in by[client, "deep_nesting"], by[client, "deep_nesting"]
        assert "timeout" in by[client, "hang"] and "timeout" in by[client, "trickle"]
        assert "http_500" in by[client, "http_500"] and "connection" in by[client, "reset_mid_body"]
    mcp_ran = any(r["client"] == "mcp_http" and r["outcome"] != "skipped" for r in out)
    if mcp_ran:  # the MCP SDK is installed
        # the capped transport cut the body (the SDK would read it whole); the message names the leaf error
        assert "max_body_bytes" in by["mcp_http", "huge_body"], by["mcp_http", "huge_body"]
        assert "TaskGroup" not in by["mcp_http", "http_500"], by["mcp_http", "http_500"]


def test_an_uncaught_error_or_a_slow_client_is_reported_failed(monkeypatch):
    def crashing(url, lim):
        return (lambda: [][1]), (lambda: None)

    def slow(url, lim):
        return (lambda: time.sleep(lim.deadline_s + 1.1) or "ok"), (lambda: None)

    monkeypatch.setitem(rh.CLIENTS, "crashing", crashing)
    monkeypatch.setitem(rh.CLIENTS, "slow", slow)
    out = http_fault_matrix(timeout_s=0.05, clients=("crashing", "slow"), faults=("http_500",))
    assert [r["outcome"] for r in out] == ["failed", "failed"]
    assert "UNCAUGHT IndexError" in out[0]["detail"] and "took" in out[1]["detail"]


def test_fault_server_rejects_an_unknown_fault():
    with pytest.raises(ValueError, match="fault must be one of"):
        rh.FaultServer("teapot")
