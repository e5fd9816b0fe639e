"""The credit report: one self-contained HTML file of episodes with every action token coloured by
its advantage, filters, group and prefix-tree views, an estimator comparison and the run's curves.

    write_report("runs/quickstart", "report.html")             # a run directory or a RolloutStore file
    view(episodes, compare="gigpo")                            # in Jupyter: renders inline
    build_report(episodes, estimator="grpo").save("r.html")
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditgym import Episode
from creditgym.viewer.assets import CSS, JS
from creditgym.viewer.curves import curves_html, read_metrics
from creditgym.viewer.data import MAX_OBS_CHARS, report_data, turn_index_stats
from creditgym.viewer.recredit import attached_credit, read_episodes, recredit

__all__ = ["Report", "build_report", "credits_for", "find_tokenizer", "view", "write_report"]

DEFAULT_ESTIMATOR = "grpo"
MODEL_DIRS = ("final_model", "sft_model")  # what the quickstart saves in its run directory


@dataclass(frozen=True)
class Report:
    """A rendered report: `.html` (the whole file), `.save(path)`, and inline display in Jupyter."""

    html: str = field(repr=False)

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.html, encoding="utf-8", errors="replace")
        return out

    def _repr_html_(self) -> str:
        # an iframe keeps the report's script and style apart from the notebook's own
        return f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:720px;border:0"></iframe>'


def credits_for(
    episodes: Sequence[Episode], estimator: str | None = None, cfg: Mapping[str, Any] | None = None
) -> tuple[str, list[dict[str, Any] | None]]:
    """`(name, one meta["credit"] per episode)`: the attached credit when it is `estimator`'s (or when
    `estimator` is None and one estimator's credit is attached), else a fresh `recredit`
    (`estimator`, default grpo, with `cfg`)."""
    attached = [attached_credit(ep) for ep in episodes]
    names = {c["estimator"] for c in attached if c is not None}
    if len(names) == 1 and cfg is None and (estimator is None or estimator in names):
        return names.pop(), attached
    credited = [attached_credit(ep) for ep in recredit(episodes, estimator or DEFAULT_ESTIMATOR, **dict(cfg or {}))]
    return next(c["estimator"] for c in credited if c is not None), credited


def find_tokenizer(run_dir: str | Path) -> Any:
    """The tokenizer a run saved with its model (`final_model/`, `sft_model/`), else None."""
    for sub in MODEL_DIRS:
        path = Path(run_dir) / sub
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer  # heavy: only when a run directory has a model

            return AutoTokenizer.from_pretrained(str(path))
    return None


def _page(data: Mapping[str, Any], curves: str, title: str) -> str:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("</", "<\\/").replace("<!--", "\\u003c!--")  # cannot end the <script> early
    t = html.escape(title)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>{CSS}</style></head><body>
<header><h1>{t}</h1><div class="bar">
<span>outcome</span><button class="of on" data-v="all">all</button><button class="of" data-v="1">success</button><button class="of" data-v="0">failure</button>
<label><select id="fg"></select></label><label><select id="fk"></select></label><label><select id="fr"></select></label>
<label>estimator <select id="fe"></select></label><label>compare <select id="fc"></select></label>
<label><input type="checkbox" id="fd"> only sign disagreements</label>
<span id="legend">advantage <span id="lmin"></span><span class="grad"></span><span id="lmax"></span></span>
</div><div id="note" class="tm"></div></header>
<main>{f'<details open><summary>run curves</summary><section id="curves">{curves}</section></details>' if curves else ''}
<div id="group"></div>
<div class="bar"><button id="prev">‹ prev</button><span id="count"></span><button id="next">next ›</button></div>
<div id="list"></div></main><div id="tip"></div>
<script type="application/json" id="data">{payload}</script>
<script>{JS}</script></body></html>
"""


def build_report(
    episodes: Sequence[Episode],
    *,
    estimator: str | None = None,
    cfg: Mapping[str, Any] | None = None,
    compare: str | None = None,
    compare_cfg: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    metrics: Sequence[Mapping[str, float]] = (),
    title: str = "creditgym credit report",
    max_obs_chars: int = MAX_OBS_CHARS,
) -> Report:
    """The report of `episodes` coloured by `estimator` (attached credit, else grpo: `credits_for`),
    with `compare` (a second estimator) side by side, `metrics` (rows of a run's metrics.jsonl) as
    curves, and `tokenizer` (anything with `decode(ids)`) splitting actions into tokens."""
    if not episodes:
        raise ValueError("build_report needs at least one episode")
    name, primary = credits_for(episodes, estimator, cfg)
    credits = {name: primary}
    if compare is not None:
        other, second = credits_for(episodes, compare, compare_cfg or {})
        credits[other if other != name else f"{other} (2)"] = second
    data = report_data(episodes, credits, tokenizer=tokenizer, max_obs_chars=max_obs_chars)
    return Report(_page(data, curves_html(metrics, turn_index_stats(primary)), title))


def write_report(source: str | Path, out_html: str | Path, **kwargs: Any) -> Path:
    """Write the report of a run directory (its episodes.jsonl, metrics.jsonl and saved tokenizer)
    or of a RolloutStore file to `out_html`; `kwargs` go to `build_report`."""
    src = Path(source)
    if src.is_dir():
        kwargs.setdefault("metrics", read_metrics(src))
        if kwargs.get("tokenizer") is None:
            kwargs["tokenizer"] = find_tokenizer(src)
    kwargs.setdefault("title", f"creditgym credit report: {src.name}")
    return build_report(read_episodes(src), **kwargs).save(out_html)


def view(episodes: Sequence[Episode], **kwargs: Any) -> Report:
    """`build_report(episodes, **kwargs)`: in a Jupyter notebook the returned Report renders inline."""
    return build_report(episodes, **kwargs)
