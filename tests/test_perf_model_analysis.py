"""Model analysis: the variant grid, the choice rule, and the per-variant repository it serves."""

from __future__ import annotations

import pytest

from preedit.errors import UsageError
from preedit.perf.speed.model_analysis import (ConfigVariant, VariantResult, analysis_table, build_variants,
                                         choose_config, merge_passes, write_variant_repository)


def test_build_variants_drops_queue_delay_when_batching_is_off():
    variants = build_variants([1, 2], [0], [1, 8], [0, 2000])
    assert ConfigVariant(1, 0, 1, 0) in variants and ConfigVariant(1, 0, 1, 2000) not in variants
    assert len(variants) == 2 * (1 + 2)
    assert len({v.name for v in variants}) == len(variants)
    with pytest.raises(UsageError):
        build_variants([], [0], [1], [0])


def _result(v, fps1, p95_1, fps4):
    return VariantResult(v, fps={1: fps1, 4: fps4}, p95_ms={1: p95_1, 4: 2 * p95_1}, batch={1: 1.0, 4: 2.0})


def test_choose_config_prefers_throughput_within_latency_slack_when_sweeping():
    a = _result(ConfigVariant(1, 0, 8, 2000), 20, 52.0, 30)   # 2 ms of queue delay at c1
    b = _result(ConfigVariant(1, 0, 8, 0), 21, 50.0, 29)
    c = _result(ConfigVariant(2, 1, 8, 8000), 15, 70.0, 40)   # best throughput, but c1 latency +40%
    assert choose_config([a, b, c], 1, 4).variant == a.variant
    assert choose_config([a, b, c], 1, 4, latency_slack=0.5).variant == c.variant
    with pytest.raises(UsageError):
        choose_config([VariantResult(ConfigVariant())], 1, 4)
    table = analysis_table([a, b, c], [1, 4], chosen=a)
    assert "| 1 **chosen** (export default) | auto | 8 | 2000 | 20.0 | 52.0 | 1.00 | 30.0 |" in table


def test_variant_repository_serves_each_config_when_written(tmp_path):
    from preedit.export import read_model_config
    from preedit.paths import model_repository

    onnx = model_repository() / "preedit" / "1" / "model.onnx"
    if not onnx.is_file():
        pytest.skip(f"no committed model at {onnx}")
    variants = [ConfigVariant(2, 1, 4, 500), ConfigVariant(1, 0, 1, 0)]
    repo = write_variant_repository(onnx, variants, tmp_path)
    for v in variants:
        cfg = read_model_config(repo / v.name / "config.pbtxt")
        assert cfg["name"] == v.name and cfg["max_batch_size"] == v.max_batch_size
        assert cfg["instance_group"][0]["count"] == v.instance_count
        assert cfg["parameters"]["intra_op_threads"]["string_value"] == str(v.intra_op_threads)
        assert int(cfg["dynamic_batching"].get("max_queue_delay_microseconds", 0)) == v.max_queue_delay_us
        assert (repo / v.name / "1" / "model.onnx").read_bytes() == onnx.read_bytes()


def test_merge_passes_averages_figures_when_measured_twice():
    v = ConfigVariant()
    first = VariantResult(v, fps={1: 10.0, 4: 20.0}, p95_ms={1: 100.0}, batch={4: 2.0})
    second = VariantResult(v, fps={1: 14.0}, p95_ms={1: 60.0, 4: 300.0}, batch={4: 3.0})
    merged = merge_passes(v, [first, second])
    assert merged.fps == {1: 12.0, 4: 20.0}
    assert merged.p95_ms == {1: 80.0, 4: 300.0} and merged.batch == {4: 2.5}
