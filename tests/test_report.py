"""The run report opens with the result: gold per stage and per variant with CIs, the reward model's
accuracy, notebook times, and charts; the raw metrics follow, collapsed. Checked as text and in a browser."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from course_lib.report import build_report, headline
from course_lib.results import record_metrics

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]


def gain(mean: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - 0.03, "ci_high": mean + 0.03}


@pytest.fixture
def recorded_run(tmp_path):
    """A run directory with the metrics notebooks 02-07 record (values made up, shapes real)."""
    record_metrics(tmp_path, "01_data_curation", {"funnel": {"code": {"kept": 100}}, "versions": {"trl": "1.16.0"}})
    record_metrics(tmp_path, "02_sft", {"gold_score_before": 0.25, "gold_score_after": 0.67, "ledger": {"wall_seconds": 70.0}})
    record_metrics(tmp_path, "03_reward_model", {"accuracy": 0.977, "accuracy_ci": [0.94, 1.0]})
    record_metrics(tmp_path, "03b_reward_model_limits", {"answer_swap": {"own_preferred_rate": 0.52}})
    record_metrics(tmp_path, "04_ppo", {"gold_score_before": 0.67, "gold_score_after": 0.71, "gold_gain": gain(0.04),
                                        "final_kl": 1.7, "ledger": {"wall_seconds": 74.0}})
    record_metrics(tmp_path, "05_dpo", {"gold_score_before": 0.67, "gold_score_after": 0.72, "gold_gain": gain(0.05),
                                        "kl": 0.6, "ledger": {"wall_seconds": 72.0}})
    results = {name: {"gold_score": 0.67 + g, "gold_gain": gain(g), "reward": r, "kl": k}
               for name, g, r, k in (("sft", 0.0, -1.2, 0.0), ("sft+dpo", 0.05, 0.4, 0.6),
                                     ("sft+reward+ppo", 0.04, 2.3, 1.9), ("sft+reward+ppo+dpo", 0.03, 1.8, 2.6))}
    record_metrics(tmp_path, "06_unified_pipeline", {"results": results})
    record_metrics(tmp_path, "07_evaluation", {"significance": [
        {"variant": "sft+dpo", "p_holm": 0.003, "significant": True},
        {"variant": "sft+reward+ppo", "p_holm": 0.2, "significant": False}]})
    state = {"notebooks": {name: {"status": "done", "seconds": 60.0 + i}
                           for i, name in enumerate(["00_setup", "01_data_curation", "02_sft", "03_reward_model",
                                                     "03b_reward_model_limits", "04_ppo", "05_dpo", "06_unified_pipeline"])},
             "versions": {"trl": "1.16.0", "transformers": "5.0.0", "bitsandbytes": None}}
    paths = build_report(tmp_path, "Run demo (tiny-cpu)", state)
    return tmp_path, paths


@pytest.mark.unit
def test_the_report_opens_with_the_headline_and_keeps_every_metric(recorded_run):
    run_dir, paths = recorded_run
    text = paths["markdown"].read_text()
    assert text.index("## Headline") < text.index("All recorded metrics") < text.index("### 01_data_curation")
    assert "| DPO | 0.67 | 0.72 | +0.050 (+0.020, +0.080) | 0.6 | 72 |" in text
    assert "| sft+reward+ppo | 0.71 | +0.040 (+0.010, +0.070) | 0.2 | False | 2.3 | 1.9 |" in text
    assert "| sft+dpo | 0.72 | +0.050 (+0.020, +0.080) | 0.003 | True | 0.4 | 0.6 |" in text
    assert "| sft+reward+ppo+dpo | 0.7 | +0.030 (+0.000, +0.060) |  |  | 1.8 | 2.6 |" in text
    assert "accuracy against gold on held-out pairs 0.977 (95% CI 0.940 to 1.000)" in text and "0.52 of the time" in text
    assert "| 05_dpo | done | 66 |" in text and "| versions.trl | 1.16.0 |" in text
    assert "Software: trl 1.16.0, transformers 5.0.0 (verified: 5.24.0)." in text
    page = paths["html"].read_text()
    assert page.count("plotly-graph-div") == 3 and "<details><summary>All recorded metrics</summary>" in page
    assert "<script src=\"https://cdn.plot.ly" not in page  # plotly.js is embedded: the report opens offline


@pytest.mark.unit
def test_a_run_without_results_says_so(tmp_path):
    head = headline({}, None)
    assert head == {"stages": [], "variants": [], "reward_model": None, "notebooks": [], "versions": {}}
    assert "No notebook has recorded results yet." in build_report(tmp_path)["markdown"].read_text()


@pytest.mark.browser
@pytest.mark.timeout(180)
@pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                    reason="needs Debian's Chromium at /usr/bin/chromium: run scripts/install_browser.sh")
def test_the_report_shows_its_headline_and_charts_in_a_browser(recorded_run):
    from playwright.sync_api import expect, sync_playwright

    _, paths = recorded_run
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(paths["html"].as_uri())
            expect(page.get_by_role("heading", name="Headline")).to_be_visible()
            expect(page.get_by_role("cell", name="sft+reward+ppo+dpo").first).to_be_visible()
            charts = page.locator(".js-plotly-plot")
            expect(charts).to_have_count(3)
            expect(charts.first.locator(".main-svg").first).to_be_visible()  # plotly drew it
            expect(page.locator("g.point").first).to_be_attached()  # with its bars
            # The raw metrics are there, collapsed until opened.
            raw = page.get_by_role("cell", name="versions.trl")
            expect(raw).to_be_hidden()
            page.get_by_text("All recorded metrics").click()
            expect(raw).to_be_visible()
            (REPO / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "test-artifacts" / "report.png"), full_page=True)
        finally:
            browser.close()
