"""The peer comparison's tables: per-round ratios to the best peer, medians, gaps."""

from benchmarks.peers.tables import SERVICE, Face, best_peer, format_face, ratio, spread

THROUGHPUT = Face("grpc32", "gRPC, 32 callers", "requests_per_second", "calls/s",
                  (SERVICE, "kserve", "mlserver"), ("kserve", "mlserver"), target="≥ 1.4×")
LATENCY = Face("grpc1", "gRPC, 1 caller", "p50_ms", "p50 ms", (SERVICE, "kserve"), ("kserve",),
               higher_is_better=False, target="≤ 1.00")


def figures(rps=None, p50=None, p99=None):
    return {"requests_per_second": rps, "p50_ms": p50, "p99_ms": p99}


def test_the_ratio_is_to_the_best_peer_by_the_faces_own_sense_of_better():
    assert ratio(THROUGHPUT, {SERVICE: 600, "kserve": 400, "mlserver": 500}) == 600 / 500
    assert best_peer(LATENCY, {SERVICE: 2.0, "kserve": 3.0}) == ("kserve", 3.0)
    assert ratio(LATENCY, {SERVICE: 2.0, "kserve": 4.0}) == 0.5


def test_a_peer_without_a_figure_is_left_out_and_no_peer_gives_no_ratio():
    assert ratio(THROUGHPUT, {SERVICE: 600, "kserve": None, "mlserver": 300}) == 2.0
    assert ratio(THROUGHPUT, {SERVICE: 600, "kserve": None, "mlserver": None}) is None
    assert spread([None, None]) == "—"


def test_the_table_gives_every_round_the_medians_and_the_median_ratio():
    results = {
        1: {SERVICE: {"grpc32": figures(600)}, "kserve": {"grpc32": figures(400)},
            "mlserver": {"grpc32": figures(500)}},
        2: {SERVICE: {"grpc32": figures(900)}, "kserve": {"grpc32": figures(300)},
            "mlserver": {"grpc32": figures(450)}},
        3: {SERVICE: {"grpc32": figures(700)}, "kserve": {"grpc32": figures(700)},
            "mlserver": {}},
    }
    text = format_face(THROUGHPUT, results, {SERVICE: "this service"})
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| round | this service, calls/s | kserve, calls/s |")
    assert rows[2] == "| 1 | 600.0 | 400.0 | 500.0 | mlserver | 1.20 |"
    assert rows[3] == "| 2 | 900.0 | 300.0 | 450.0 | mlserver | 2.00 |"
    assert rows[4] == "| 3 | 700.0 | 700.0 | — | kserve | 1.00 |"
    assert rows[5] == "| median | 700.0 | 400.0 | 475.0 |  | 1.20 |"
    assert "This service ÷ the best peer: 1.20 (1.00–2.00, 3 rounds); target ≥ 1.4×." in text


def test_the_predict_table_adds_the_services_p99_and_its_share_of_the_in_process_limit():
    face = Face("predict32", "/predict", "requests_per_second", "requests/s",
                (SERVICE, "litserve"), ("litserve",), limit="in-process")
    results = {1: {SERVICE: {"predict32": figures(800, p99=60.0)},
                   "litserve": {"predict32": figures(400)},
                   "in-process": {"predict32": figures(2000)}}}
    rows = [line for line in format_face(face, results, {}).splitlines()
            if line.startswith("| 1 ")]
    assert rows == ["| 1 | 800.0 | 400.0 | litserve | 2.00 | 60.0 | 2,000.0 | 0.40 |"]
