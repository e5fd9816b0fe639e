"""End to end: the report in headless Chromium (Debian's `chromium`, driven by Playwright's Python package).

Set VIEWER_SCREENSHOT=docs/img/viewer.png to refresh the screenshot in the docs (default: a temp file).
The 10,000-episode size and load-time measurement of docs/viewer.md is `-m slow`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest

from creditgym.viewer import build_report, recredit

from ._episodes import collected

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e '.[dev]'")
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        pytest.skip("chromium is missing: apt-get install chromium (make system-packages does it as root)")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=shutil.which("chromium") or CHROMIUM,
            args=ARGS, headless=True, viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        yield ctx
        ctx.close()


def _open(browser, path: Path):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, errors


def _with_tree(episodes):
    """Give group 0 prefix-tree node ids (equal action prefixes share a node), as tree rollouts do."""
    nodes: dict[tuple[str, ...], int] = {}
    g0 = episodes[0].group_id
    return [dataclasses.replace(ep, node_ids=tuple(
        nodes.setdefault(tuple(t.action_text for t in ep.turns[: k + 1]), len(nodes)) for k in range(ep.num_turns)))
        if ep.group_id == g0 else ep for ep in episodes]  # fmt: skip


def test_report_in_chromium(browser, tmp_path):
    episodes = _with_tree(recredit(collected("creditgym/Search-v0", groups=6, size=4), "gigpo"))
    pvd = recredit(episodes, "pvd")
    disagree = sum(any(a * b < 0 for a, b in zip(e.meta["credit"]["turn"], f.meta["credit"]["turn"]))
                   for e, f in zip(episodes, pvd))  # fmt: skip
    assert disagree > 0
    out = build_report(episodes, compare="pvd", title="creditgym report: Search-v0").save(tmp_path / "report.html")
    page, errors = _open(browser, out)
    assert not errors
    # token spans with advantage colours
    tokens = page.locator("#list .tk")
    assert tokens.count() > 100
    colours = {tokens.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(0, 400, 7)}
    assert len(colours) > 2 and any(c.startswith("rgb(") and c != "rgb(255, 255, 255)" for c in colours)
    # hovering a token shows its values
    page.locator("#list .ep").first.locator(".tk").nth(5).hover()
    tip = page.inner_text("#tip")
    for what in ("token", "logprob", "advantage", "turn reward", "state key", "vs pvd"):
        assert what in tip
    shot = Path(os.environ.get("VIEWER_SCREENSHOT") or tmp_path / "viewer.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), type="png")
    assert 0 < shot.stat().st_size < 300_000
    # paging: 24 episodes, 20 a page
    assert page.locator("#list .ep").count() == 20
    page.click("#next")
    assert page.locator("#list .ep").count() == 4 and "page 2 / 2" in page.inner_text("#count")
    page.click("#prev")
    # clicking a filter hides episodes
    assert page.locator("#list .eh .ok").count() > 0
    page.click("button.of[data-v='0']")
    assert page.locator("#list .eh .ok").count() == 0 and page.locator("#list .eh .no").count() > 0
    page.click("button.of[data-v='all']")
    # the comparison marks the turns whose signs disagree
    assert page.locator("#list .turn.disagree").count() > 0
    page.check("#fd")
    assert page.inner_text("#count").startswith(f"{disagree} of 24 episodes")
    page.uncheck("#fd")
    # the group side by side, with its prefix tree
    page.locator("#list button.grp").first.click()
    assert page.locator("#group .cols .ep").count() == 4 and page.locator("#group ul.tree li").count() > 0
    assert not errors


@pytest.mark.slow
def test_size_and_load_time_at_10000_episodes(browser, tmp_path):
    """docs/viewer.md: `pytest -m slow tests/viewer/test_browser.py -s` prints the numbers."""
    base = recredit(collected("creditgym/Search-v0", groups=125, size=8), "gigpo")  # 1,000 episodes
    episodes = [dataclasses.replace(ep, group_id=f"{ep.group_id}-{r}", episode_id=f"{ep.episode_id}-{r}", turns=tuple(
                    dataclasses.replace(t, obs_text=f"{t.obs_text} [{r}]") for t in ep.turns))  # no shared text
                for r in range(10) for ep in base]  # fmt: skip
    t0 = time.perf_counter()
    out = build_report(episodes, compare="grpo").save(tmp_path / "report.html")
    build_s = time.perf_counter() - t0
    size_mb = out.stat().st_size / 1e6
    t0 = time.perf_counter()
    page, errors = _open(browser, out)
    load_s = time.perf_counter() - t0
    assert not errors and page.locator("#list .ep").count() == 20
    t0 = time.perf_counter()
    page.click("button.of[data-v='0']")
    assert page.locator("#list .eh .ok").count() == 0
    filter_s = time.perf_counter() - t0
    print(f"\n10,000 episodes: {size_mb:.1f} MB, built in {build_s:.1f} s, first render in Chromium {load_s:.2f} s, "
          f"a filter click {filter_s:.2f} s")
    assert size_mb < 50
