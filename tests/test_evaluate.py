"""qlib.evaluate against brute-force loops on small random data."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from qlib import evaluate, metrics, miners


@pytest.fixture
def data(gen):
    # 3 coarse classes; coarse 2 has a single fine class (NMI undefined there).
    fine = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5])
    coarse_of_fine = torch.tensor([0, 0, 1, 1, 1, 2])
    x = torch.randn(len(fine), 3, generator=gen) + fine[:, None].float()
    return x, fine, coarse_of_fine[fine]


def brute_neighbors(x, k):
    out = []
    for i in range(len(x)):
        dist = [(float(torch.dist(x[i], x[j])), j) for j in range(len(x)) if j != i]
        out.append([j for _, j in sorted(dist)[:k]])
    return torch.tensor(out)


def test_nearest_neighbors_matches_loops_with_ties(gen):
    x = torch.randn(12, 4, generator=gen)
    x[7] = x[2]  # a tie: the lower index comes first
    x[9] = x[2]
    for chunk in (1, 5, 1024):
        got = evaluate.nearest_neighbors(x, 5, chunk_size=chunk)
        assert torch.equal(got, brute_neighbors(x, 5))
    assert evaluate.nearest_neighbors(x, 3)[2, :2].tolist() == [7, 9]


def test_nearest_neighbors_bad_k(gen):
    with pytest.raises(ValueError, match="k must be"):
        evaluate.nearest_neighbors(torch.randn(4, 2, generator=gen), 4)
    with pytest.raises(ValueError, match="embeddings"):
        evaluate.nearest_neighbors(torch.zeros(4, dtype=torch.long), 1)


def test_per_coarse_metrics_against_loops(data):
    x, fine, coarse = data
    table = evaluate.per_coarse_metrics(x, fine, coarse, {0: "a", 1: "b", 2: "c"}, ks=(1, 2, 4))
    assert list(table["coarse_name"]) == ["a", "b", "c"]
    neighbors = brute_neighbors(x, 4)
    for _, row in table.iterrows():
        members = [i for i in range(len(x)) if coarse[i] == row["coarse"]]
        assert row["n_images"] == len(members)
        for k in (1, 2, 4):
            hits = [any(fine[j] == fine[i] for j in neighbors[i, :k]) for i in members]
            assert row[f"R@{k}"] == pytest.approx(100 * sum(hits) / len(hits))
        coarse_hits = [coarse[neighbors[i, 0]] == coarse[i] for i in members]
        assert row["coarse_R@1"] == pytest.approx(100 * sum(coarse_hits) / len(members))
    # The image-weighted mean of the per-coarse recall is the overall recall.
    overall = metrics.recall_at_k(x, fine, ks=(1, 2, 4))
    for k in (1, 2, 4):
        weighted = (table[f"R@{k}"] * table["n_images"]).sum() / table["n_images"].sum()
        assert weighted == pytest.approx(100 * overall[k])
    single = table.set_index("coarse_name").loc["c"]
    assert single["n_fine"] == 1 and math.isnan(single["NMI"])
    both = table.set_index("coarse_name").loc["a"]
    members = coarse == 0
    assert both["NMI"] == pytest.approx(100 * metrics.nmi(x[members], fine[members]))


def test_selection_distances_are_the_selected_quadruplets_distances(data):
    x, fine, coarse = data
    got = evaluate.selection_distances(
        x, fine, coarse, "method2", 6, generator=torch.Generator().manual_seed(3)
    )
    generator = torch.Generator().manual_seed(3)
    anchors = miners.sample_anchors(miners.valid_anchors(fine, coarse), 6, generator=generator)
    quads = miners.select_quadruplets(x, fine, coarse, anchors, "method2", generator=generator)
    assert list(got.columns) == list(evaluate.DISTANCE_COLUMNS) and len(got) == 6
    for i, (r, pp, pn, n) in enumerate(quads.tolist()):
        expected = [float(torch.dist(x[r], x[j])) for j in (pp, pn, n)]
        np.testing.assert_allclose(got.iloc[i].to_numpy(), expected, rtol=1e-5)


def test_distance_summary_counts_ordered_quadruplets():
    distances = pd.DataFrame(
        {"d_rpp": [0.1, 0.5, 0.2], "d_rpn": [0.2, 0.4, 0.3], "d_rn": [0.3, 0.9, 0.1]}
    )
    summary = evaluate.distance_summary(distances)
    assert summary["ordered_fraction"] == pytest.approx(1 / 3)
    assert summary["d_rpp_mean"] == pytest.approx(0.8 / 3)
    assert summary["d_rn_std"] == pytest.approx(np.std([0.3, 0.9, 0.1], ddof=1))
    assert summary["n"] == 3


def test_umap_neighbours_stay_below_n():
    # UMAP itself runs in notebook 04 (the smoke pipeline test); its JIT costs ~15 s.
    assert evaluate.umap_neighbors(8, 15) == 7
    assert evaluate.umap_neighbors(500, 15) == 15
    with pytest.raises(ValueError, match="at least 3"):
        evaluate.umap_neighbors(2, 15)
    with pytest.raises(ValueError, match="n_neighbors"):
        evaluate.umap_neighbors(10, 1)


def test_load_display_images(tmp_path):
    from PIL import Image

    paths = []
    for i, colour in enumerate(["red", "blue"]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 30), colour).save(path)
        paths.append(str(path))
    images = evaluate.load_display_images(paths, size=16)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    assert images[0, 0, 0].tolist() == [255, 0, 0] and images[1, 0, 0].tolist() == [0, 0, 255]


def test_initial_model_is_the_runs_initialisation(tmp_path):
    from qlib import train

    # epochs=0: the run's checkpoint holds the weights train initialised.
    config = train.config_from_preset(
        "smoke", method="method2", run_root=str(tmp_path), seed=3, epochs=0, progress=False
    )
    config, model = train.load_run(train.train(config))
    data = train.build_datasets(config)
    twin = train.initial_model(config, data)
    trained, untrained = model.state_dict(), twin.state_dict()
    assert trained.keys() == untrained.keys()
    assert all(torch.equal(trained[k], untrained[k]) for k in trained)
    other = train.initial_model(dataclasses.replace(config, seed=4), data).state_dict()
    assert not all(torch.equal(trained[k], other[k]) for k in trained)


def test_figures_folder_keeps_smoke_out_of_figures(tmp_path):
    from qlib.plots import FIGURES_DIR, figures_folder
    from qlib.utils import repo_root, resolve_path

    assert figures_folder(tmp_path, smoke=True) == tmp_path / "figures"
    assert figures_folder(tmp_path, smoke=False) == FIGURES_DIR
    assert figures_folder(tmp_path, smoke=True, figures_dir="/x") == Path("/x")
    assert figures_folder("runs/x", smoke=True) == repo_root() / "runs/x/figures"
    assert resolve_path("runs/demo") == repo_root() / "runs/demo"


def test_pick_queries_and_json_records():
    queries = evaluate.pick_queries(20, 5, seed=1)
    assert len(set(queries.tolist())) == 5 and queries.tolist() == sorted(queries.tolist())
    assert torch.equal(queries, evaluate.pick_queries(20, 5, seed=1))
    with pytest.raises(ValueError, match="n_queries"):
        evaluate.pick_queries(3, 4)
    records = evaluate.json_records(pd.DataFrame({"a": [1.0, float("nan")], "b": ["x", "y"]}))
    assert records == [{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}]
    assert evaluate.histogram_method("lifted") == "method2"
    assert evaluate.histogram_method("method1") == "method1"


# ----------------------------------------------------------------------------------------------
# One iteration taken apart (notebook 03)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_config(tmp_path_factory):
    from qlib import train

    root = tmp_path_factory.mktemp("dissect")
    return train.config_from_preset("smoke", run_root=str(root), method="method1", progress=False)


@pytest.fixture(scope="module")
def dissection(smoke_config):
    return evaluate.dissect_iteration(smoke_config)


def test_dissection_is_the_trainers_first_iteration(smoke_config, dissection):
    from qlib import train

    log = train.read_log(train.train(smoke_config))
    check = evaluate.first_iteration_check(dissection, log)
    assert dissection.trainer_method == "method1"
    assert list(check.columns)[:4] == ["loss", "joint", "global", "classification"]
    np.testing.assert_allclose(check.iloc[0], check.iloc[1], rtol=1e-5, atol=1e-7)
    # eq. 6 is the sum of the parts it shows.
    losses = dissection.losses
    total = losses["joint"] + losses["classification"] + losses["global_term"]
    np.testing.assert_allclose(total, losses["loss"], rtol=1e-6)
    assert np.allclose(losses["global_term"], smoke_config.eta * losses["global"])


def test_dissection_picks_are_the_reference_selection_on_the_bank(smoke_config, dissection):
    bank, fine, coarse = dissection.bank, dissection.fine, dissection.coarse
    n, batch = len(fine), smoke_config.batch_size
    assert bank.shape[0] == n == len(dissection.paths)
    assert dissection.anchors.shape == (batch,)
    # The anchors are the trainer's: drawn first from a generator seeded with the run's seed.
    generator = torch.Generator().manual_seed(smoke_config.seed)
    anchors = miners.sample_anchors(miners.valid_anchors(fine, coarse), batch, generator)
    assert torch.equal(anchors, dissection.anchors)
    state = generator.get_state()
    quads = dissection.quadruplets
    for method in miners.METHODS:
        generator.set_state(state)
        expected, fallbacks = miners.select_quadruplets(
            bank, fine, coarse, anchors, method, generator, return_fallbacks=True
        )
        got = quads[quads["method"] == method]
        assert got["row"].tolist() == list(range(batch))
        assert got[["R", "P+", "P-", "N"]].to_numpy().tolist() == expected.tolist()
        assert got["fallback_pos"].tolist() == fallbacks[:, 0].tolist()
        for i, (r, pp, pn, neg) in enumerate(expected.tolist()):
            row = got.iloc[i]
            for column, (a, b) in {
                "d_rpp": (r, pp), "d_rpn": (r, pn), "d_rn": (r, neg),
                "d_npp": (neg, pp), "d_npn": (neg, pn),
            }.items():  # fmt: skip
                assert row[column] == pytest.approx(float(torch.dist(bank[a], bank[b])), abs=1e-5)
            assert dissection.anchor_distances[i, pp] == pytest.approx(row["d_rpp"], abs=1e-5)
            if method != "random" and not row["fallback_pos"]:
                assert row["d_rpp"] > row["d_rn"]  # outside the sphere of radius D(R, N)
    # Methods 1 and 2 share the hardest negative.
    by = {m: quads[quads["method"] == m] for m in ("method1", "method2")}
    assert by["method1"]["N"].tolist() == by["method2"]["N"].tolist()


def test_dissection_of_a_baseline_and_bad_methods(smoke_config):
    baseline = dataclasses.replace(smoke_config, method="semihard")
    dissection = evaluate.dissect_iteration(baseline, methods=("method2",))
    assert dissection.trainer_method is None and list(dissection.losses.index) == ["method2"]
    with pytest.raises(ValueError, match="baseline"):
        evaluate.first_iteration_check(dissection, pd.DataFrame({"iteration": [1]}))
    with pytest.raises(ValueError, match="methods must be some of"):
        evaluate.dissect_iteration(smoke_config, methods=("semihard",))


def test_principal_components_match_numpy(gen):
    x = torch.randn(40, 5, generator=gen) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1])
    xy = evaluate.principal_components(x)
    centred = (x - x.mean(0)).double().numpy()
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    np.testing.assert_allclose(np.abs(xy), np.abs(expected), rtol=1e-4, atol=1e-4)


def test_dissection_figure(dissection):
    import matplotlib.pyplot as plt

    from qlib import plots

    images = evaluate.dissection_images(dissection, n_rows=2, size=16)
    shown = dissection.quadruplets[dissection.quadruplets["row"] < 2]
    assert set(images) == {int(i) for c in ("R", "P+", "P-", "N") for i in shown[c]}
    fig = plots.plot_iteration_dissection(dissection, images, n_rows=2)
    # bank + losses + per row: one strip and 1 + 3 x 3 images.
    assert len(fig.axes) == 2 + 2 * (1 + 1 + 3 * 3)
    plt.close(fig)
