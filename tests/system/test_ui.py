"""The MLflow UI recipe of docs/ui.md, step by step, in a real browser.

``lgals reproduce --quick`` fills a store, ``mlflow ui`` serves it on a free port, and
Debian's Chromium, driven by Playwright (``executable_path``: Playwright cannot download its
own browsers here), does what docs/ui.md tells a user to do and checks what they would see.
``LGALS_SCREENSHOTS=docs/ui`` saves docs/ui.md's pictures there (default: the test's
temporary directory). Skipped only where Chromium is not installed, and never in CI
(``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    MLFLOW,
    MlflowServer,
    cli_env,
    free_port,
    run_lgals,
    sqlite_uri,
    wait_for,
)

from lgals.losses import SUITES
from lgals.schema import SEED_RUNS
from lgals.tracking.ui import runs_page

CHROMIUM = shutil.which("chromium")
# As root and offline: no sandbox, and none of Chromium's own calls home (refused here).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}
# The quick protocol: the paper's modes evaluated over seeds 0 and 1, two trials per study.
MODES, SEEDS, TRIALS = SUITES["paper"], (0, 1), 2
# What docs/ui.md asks the chart view for.
CHART_METRICS = ("test_acc", "noise_auroc", "eps_clean_mean", "eps_noisy_mean",
                 "memorized_frac")
# Group colours come from a hash of the group and can coincide: docs/ui.md says to pick
# others by clicking a group's dot; these are from MLflow's own palette.
GROUP_COLOURS = {"baseline": "#5f7281", "fixed_ls": "#137dae", "lgals": "#c83243"}
# What the browser's colour picker does to MLflow's hidden <input type=color>.
PICK_COLOUR = """(input, colour) => {
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(input, colour);
    input.dispatchEvent(new Event('input', {bubbles: true}));
}"""


@dataclass
class Ui:
    url: str  # where `mlflow ui` serves the store
    experiment_id: str
    client: MlflowClient
    printed_link: str  # the comparison link `lgals reproduce` printed
    screenshots: Path

    def runs(self, search: str) -> list:
        return self.client.search_runs([self.experiment_id], search)


@pytest.fixture(scope="module")
def ui(tmp_path_factory, _cache_dir):
    root = tmp_path_factory.mktemp("ui")
    result = run_lgals(["reproduce", "--quick", "--out", str(root / "results")], root,
                       timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (printed_link,) = re.findall(r"http://127\.0\.0\.1:5000/\S+", result.stdout)
    store = sqlite_uri(root / "mlflow.db")
    client = MlflowClient(store)
    port = free_port()
    (root / "ui.log").write_text("")
    server = MlflowServer([MLFLOW, "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                           "--port", str(port)], cli_env(), root, f"http://127.0.0.1:{port}",
                          root / "ui.log")
    server.start()  # in a session of its own: stopped with its workers by its group
    try:
        server.wait_healthy()
        screenshots = Path(os.environ.get("LGALS_SCREENSHOTS") or root / "screenshots")
        screenshots.mkdir(parents=True, exist_ok=True)
        yield Ui(server.uri, client.get_experiment_by_name("lgals-quick").experiment_id,
                 client, printed_link, screenshots)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install "
                        "chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile per test: nothing remembered from another test."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def open_runs(page, link: str) -> None:
    """Open ``link`` and wait for the runs table; close the assistant pane (not ours)."""
    page.goto(link, wait_until="load")
    page.locator("a[href*='/runs/']").first.wait_for()  # the table has loaded
    assistant = page.get_by_role("button", name="Close")
    if assistant.count():
        assistant.first.click()


def matching(page) -> int:
    text = page.get_by_text(re.compile(r"^\d+ matching runs$")).inner_text()
    return int(text.split()[0])


def listed_runs(page) -> list[str]:
    """The run names the runs table lists (links to run pages; models link elsewhere)."""
    return page.locator("a[href*='/runs/']").all_inner_texts()


def until_listed(texts: Callable[[], list[str]], expected, what: str) -> None:
    """Until ``texts()`` are ``expected`` (as a set), within 60 s: the UI draws a list in
    steps (a count or a first item comes before the rest, and items of the page before), and
    on a loaded machine it can take tens of seconds. A timeout says what was listed last."""
    seen: list[str] = []

    def listed() -> bool:
        seen[:] = texts()
        return sorted(set(seen)) == sorted(expected)

    try:
        wait_for(listed, timeout=60, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}; listed last: {sorted(seen)}") from None


def choose(page, button: str, option: str) -> None:
    """Open the dropdown ``button`` and pick ``option``."""
    page.get_by_role("button", name=button).click()
    menu = page.locator("[role=menu], [role=dialog], [role=listbox]")
    menu.get_by_text(option, exact=True).click()
    page.keyboard.press("Escape")


def seed_run_names() -> set[str]:
    return {f"{mode}-seed{seed}" for mode in MODES for seed in SEEDS}


def test_the_experiment_opens_on_its_runs_with_its_description(ui, page):
    open_runs(page, runs_page(ui.url, ui.experiment_id))
    assert matching(page) == len(ui.runs(""))  # every run of the study, nested ones too
    assert listed_runs(page) == ["reproduce-quick"]  # the tree's one top-level run
    body = page.inner_text("body")
    assert "Logit-Gradient Alignment Label Smoothing" in body  # the experiment description
    assert "Detect Issues" not in body
    page.screenshot(path=ui.screenshots / "experiment.png")


def test_the_readme_filter_lists_exactly_the_evaluate_seed_runs(ui, page):
    """Typed and sorted as a user would; the resulting page is the link lgals prints."""
    open_runs(page, runs_page(ui.url, ui.experiment_id))
    search = page.get_by_placeholder(re.compile("metrics.rmse"))
    search.fill(SEED_RUNS)
    search.press("Enter")
    choose(page, "Sort: Created", "final_test_acc")
    page.get_by_role("button", name="Sort: final_test_acc").wait_for()
    counted: list[int] = []

    def counted_alone() -> bool:
        counted[:] = [matching(page)]
        return counted[0] == len(seed_run_names())

    try:  # as until_listed: on a loaded machine the UI takes tens of seconds to count
        wait_for(counted_alone, timeout=60, what="the seed runs alone")
    except AssertionError as error:
        raise AssertionError(f"{error}; counted last: {counted}") from None
    until_listed(lambda: listed_runs(page), seed_run_names(), "the seed runs alone listed")
    assert sorted(listed_runs(page)) == sorted(seed_run_names())  # and each once
    models = page.locator("a[href*='/models/m-']")
    until_listed(models.all_inner_texts, seed_run_names(), "each run's model, named after it")
    assert sorted(models.all_inner_texts()) == sorted(seed_run_names())
    assert "mnist1d-symmetric-0.2-seed0" in page.inner_text("body")  # the Dataset column
    assert {r.info.run_name for r in ui.runs(SEED_RUNS)} == seed_run_names()
    link = runs_page(ui.url, ui.experiment_id, SEED_RUNS)
    assert page.url.startswith(link)
    assert ui.printed_link == link.replace(ui.url, "http://127.0.0.1:5000")
    page.screenshot(path=ui.screenshots / "seed_runs.png")


def test_the_chart_view_grouped_by_mode_draws_one_line_per_mode(ui, page):
    open_runs(page, runs_page(ui.url, ui.experiment_id, SEED_RUNS))
    choose(page, "Group by", "lgals.mode")
    page.locator("label:has(input[value=CHART])").click()
    groups = page.get_by_text(re.compile(r"^Group: "))
    until_listed(groups.all_inner_texts, {f"Group: {mode}" for mode in MODES}, "the groups")
    assert len(groups.all_inner_texts()) == len(MODES)
    dots = {mode: page.locator("[role=row]", has_text=f"Group: {mode}")
            .locator("input[type=color]") for mode in MODES}
    for mode, dot in dots.items():
        dot.evaluate(PICK_COLOUR, GROUP_COLOURS[mode])
    wait_for(lambda: {mode: dot.input_value() for mode, dot in dots.items()} == GROUP_COLOURS,
             timeout=10, what="the groups' new colours")
    charts = page.get_by_placeholder("Search metric charts")
    for metric in CHART_METRICS:
        charts.fill(metric)
        for mode in MODES:  # each chart's legend: one entry per group
            page.get_by_text(f"{mode} ({metric})", exact=True).first.wait_for()
    charts.fill("test_acc")
    page.get_by_text("baseline (test_acc)", exact=True).first.wait_for()
    page.screenshot(path=ui.screenshots / "charts.png")


def test_a_seed_run_shows_its_dataset_model_and_heat_map(ui, page):
    (run,) = ui.runs(f"{SEED_RUNS} and tags.lgals.mode = 'lgals' and tags.lgals.seed = '0'")
    open_runs(page, runs_page(ui.url, ui.experiment_id, SEED_RUNS))
    page.locator("a[href*='/runs/']", has_text=run.info.run_name).click()
    page.get_by_text("Logged models (1)", exact=True).wait_for()  # listed once they load
    assert page.url.endswith(f"/runs/{run.info.run_id}")
    body = page.inner_text("body")
    (dataset,) = run.inputs.dataset_inputs
    assert f"{dataset.dataset.name} ({dataset.dataset.digest})" in body
    models = page.locator("a[href*='/models/m-']")
    assert run.info.run_name in models.all_inner_texts()  # the model, named after its run
    page.screenshot(path=ui.screenshots / "seed_run.png", full_page=True)

    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("epsilon_distributions.png", exact=True).click()
    image = page.locator("img[src^='blob:']").first
    image.wait_for()
    wait_for(lambda: image.evaluate("e => e.complete && e.naturalWidth") > 500, timeout=30,
             what="the heat map image")
    page.screenshot(path=ui.screenshots / "heat_map.png")


def test_a_tune_run_lists_its_trials_by_number(ui, page):
    (tune,) = ui.runs("tags.lgals.stage = 'tune' and tags.lgals.mode = 'lgals'")
    page.goto(f"{ui.url}/#/experiments/{ui.experiment_id}/runs/{tune.info.run_id}",
              wait_until="load")
    page.get_by_text("Child runs", exact=True).wait_for()
    trials = {f"lgals-trial{n:02d}" for n in range(TRIALS)}
    for name in sorted(trials):  # the links follow the label once the child runs load
        page.locator("a[href*='/runs/']", has_text=name).first.wait_for()
    children = page.locator("a[href*='/runs/']").all_inner_texts()
    assert trials <= {name.rstrip(",") for name in children}
    trial_runs = ui.runs("tags.lgals.stage = 'trial' and tags.lgals.mode = 'lgals'")
    assert {r.info.run_name for r in trial_runs} == trials
    assert {r.data.tags["lgals.study"] for r in trial_runs} == {tune.data.tags["lgals.study"]}


def test_the_models_tab_lists_each_model_by_its_run_with_its_accuracy(ui, page):
    page.goto(f"{ui.url}/#/experiments/{ui.experiment_id}/models?workflowType=machine_learning",
              wait_until="load")
    models = page.locator("a[href*='/models/m-']")
    until_listed(models.all_inner_texts, seed_run_names(), "a model per seed run")
    (run,) = ui.runs(f"{SEED_RUNS} and tags.lgals.mode = 'baseline' and tags.lgals.seed = '1'")
    models.filter(has_text=run.info.run_name).first.click()
    page.get_by_text("final_test_acc", exact=True).first.wait_for()
    body = page.inner_text("body")
    assert f"{run.data.metrics['final_test_acc']:g}"[:5] in body
    assert run.info.run_name in body  # its source run
    assert "weight_decay" in body  # the mode's params
    page.screenshot(path=ui.screenshots / "model.png", full_page=True)
