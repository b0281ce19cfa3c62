"""What a reader of the leaderboard page trips over: overprinted labels, a missing Pareto line, a flat y axis
that spans ±0.06, and utility rows printed twice with raw JSON subsets."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest
from lb_synth import DEMO_METHODS, write_demo_like_run

from leaderboards import Store, build_leaderboard, render_leaderboard
from leaderboards._render import scatter_figure, utility_view


@pytest.fixture(scope="module")
def demo_board(tmp_path_factory: pytest.TempPathFactory):
    store = Store(tmp_path_factory.mktemp("demo-like") / "results.sqlite")
    return build_leaderboard(store, write_demo_like_run(store))


def _labels(fig) -> list:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Annotation, Text

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.canvas.draw()
    out = []
    for ax in fig.axes:
        for note in ax.texts:
            if isinstance(note, Annotation):
                out.append((ax, note.get_text(), Text.get_window_extent(note, renderer)))
    return out


def test_crowded_labels_do_not_overprint(demo_board, synthetic_store) -> None:
    for board in (demo_board, build_leaderboard(Store(synthetic_store[0], create=False))):
        labels = _labels(scatter_figure(board))
        assert len(labels) == len(board.summary)  # every point named once
        for (ax_a, a, box_a), (ax_b, b, box_b) in combinations(labels, 2):
            if ax_a is ax_b:
                assert not box_a.overlaps(box_b), (a, b)
    names = {text for _, text, _ in _labels(scatter_figure(demo_board))}
    assert names == set(DEMO_METHODS)


def test_pareto_front_is_drawn_even_for_one_optimal_point(demo_board, tmp_path: Path) -> None:
    fig = scatter_figure(demo_board)
    fronts = [line for ax in fig.axes for line in ax.get_lines() if (line.get_gid() or "").startswith("pareto-front")]
    assert len(fronts) == 2  # one per fine-tune; each has a single optimal point (aligned)
    for line in fronts:
        xs, _ys = line.get_data()
        assert len(xs) >= 3 and xs[0] == pytest.approx(15.0)  # up from the axis at aligned's 15%, then right
    render_leaderboard(demo_board, tmp_path, ["html"])
    svg = (tmp_path / "scatter.svg").read_text(encoding="utf-8")
    assert 'id="pareto-front-0"' in svg and 'id="pareto-front-1"' in svg


def test_flat_utility_gets_a_readable_axis_and_says_so(demo_board) -> None:
    fig = scatter_figure(demo_board)
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low <= 0.0 and high >= 1.0  # not matplotlib's ±0.06 around the single value
        assert any("every utility is 0" in t.get_text() for t in ax.texts)


def test_utility_rows_once_and_subsets_readable(demo_board, synthetic_store) -> None:
    view = utility_view(demo_board)
    assert len(view) == len(DEMO_METHODS) * 2 * 2  # methods × fine-tunes × 2 metrics: the en twins dropped
    assert set(view["subset"]) == {"all"}
    assert not view.duplicated(["fine-tuned", "method", "benchmark", "metric"]).any()
    # a subset that is really a part of the task stays, written key=value
    board = build_leaderboard(Store(synthetic_store[0], create=False))
    import pandas as pd

    whole = board.utility.iloc[[0]]
    assert whole["subset"].iloc[0] == "all"
    board.utility = pd.concat([whole, whole.assign(subset='{"language":"zh"}', n=5, value=0.5)], ignore_index=True)
    assert list(utility_view(board)["subset"]) == ["all", "language=zh"]
